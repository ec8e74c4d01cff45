# The load balancer of deploy/compose: Debian's HAProxy (2.6, bookworm) with haproxy.cfg.
# Built from the same base as the Corolla image, so it needs no registry either:
#   docker build -f deploy/compose/lb.Dockerfile --build-arg BASE=corolla-base:bookworm \
#     -t corolla-lb deploy/compose
# (docker-compose builds it; where a registry is reachable, haproxy:2.6 with this config works
# as well.)
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && haproxy -v
COPY haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg
# Ports above 1024: no capability needed; the user is haproxy's own (Debian's package adds it).
USER haproxy
EXPOSE 8500 8501 8404
STOPSIGNAL SIGUSR1
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
