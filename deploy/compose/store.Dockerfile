# The model store of deploy/compose: moto's S3-compatible server (in memory), installed from a
# hash-pinned lock. A stand-in for S3, MinIO or Ceph: point the replicas' AWS_ENDPOINT_URL (or
# nothing, for AWS) and credentials at the real store instead.
#   docker build -f deploy/compose/store.Dockerfile --build-arg BASE=corolla-base:bookworm \
#     -t corolla-store deploy/compose
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PIP_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY store-requirements.lock /tmp/
RUN python3 -m venv /opt/store \
 && /opt/store/bin/pip install --require-hashes --no-deps -r /tmp/store-requirements.lock \
 && /opt/store/bin/python -m moto.server --help >/dev/null
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["/opt/store/bin/python", "-m", "moto.server", "-H", "0.0.0.0", "-p", "5000"]
