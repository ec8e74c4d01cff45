#!/usr/bin/env bash
# End-to-end check of the Corolla container image: build (optional), run it the way the
# tensorflow/serving image is run, and check what a deployment relies on.
#
#   scripts/docker-smoke-test.sh                      # test an existing image (IMAGE)
#   BUILD=1 scripts/docker-smoke-test.sh              # build deploy/Dockerfile first
#
# Environment:
#   IMAGE        image to test (default corolla:dev)
#   BUILD=1      build it first from deploy/Dockerfile
#   BASE         base image for the build (default: corolla-base:bookworm when that exists
#                locally, else python:3.11-slim-bookworm)
#   BUILD_ARGS   extra `docker build` arguments, split on spaces
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   passed to the build stage when set
#                (a package mirror; a TLS-intercepting proxy: PIP_TRUSTED_HOST="pypi.org
#                files.pythonhosted.org")
#
# Checks, each printed as it passes: the image runs as a non-root user under tini; the command
# passthrough (`docker run IMAGE corolla make-demo-model ...`); MODEL_NAME + a mounted model under
# /models with a read-only root filesystem; extra args pass through as flags
# (--monitoring_config_file); model status AVAILABLE; REST predict (raw JPEG and TF Serving JSON);
# health endpoints, Prometheus metrics and the Docker HEALTHCHECK; gRPC health; `docker stop`
# drains and exits 0; --model_config_file instead of MODEL_NAME; the embedded default model when
# nothing is mounted. Only loopback ports are published; containers are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-corolla:dev}"
PREFIX="corolla-smoke-$$"
WORK="$(mktemp -d /tmp/corolla-smoke.XXXXXX)"
CONTAINERS=()

cleanup() {
  for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { printf 'ok   %s\n' "$*"; }
fail() {
  printf 'FAIL %s\n' "$*" >&2
  for c in "${CONTAINERS[@]}"; do
    echo "--- logs of $c" >&2
    docker logs --tail 40 "$c" >&2 || true
  done
  exit 1
}

if [ "${BUILD:-0}" = 1 ]; then
  if [ -z "${BASE:-}" ]; then
    if docker image inspect corolla-base:bookworm >/dev/null 2>&1; then
      BASE=corolla-base:bookworm
    else
      BASE=python:3.11-slim-bookworm
    fi
  fi
  echo ">> docker build -f deploy/Dockerfile --build-arg BASE=$BASE -t $IMAGE ."
  # shellcheck disable=SC2086  # BUILD_ARGS is a list of words on purpose
  docker build -f deploy/Dockerfile --build-arg "BASE=$BASE" \
    --build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --build-arg PIP_INDEX_URL --build-arg PIP_EXTRA_INDEX_URL --build-arg PIP_TRUSTED_HOST \
    ${BUILD_ARGS:-} -t "$IMAGE" . >&2
fi
docker image inspect "$IMAGE" >/dev/null || fail "image $IMAGE not found (BUILD=1 builds it)"

# host_port CONTAINER PORT -> the loopback port Docker published for it
host_port() { docker port "$1" "$2/tcp" | head -n1 | sed 's/.*://'; }

# wait_for URL EXPECTED_SUBSTRING SECONDS
wait_for() {
  local deadline=$((SECONDS + $3)) body=""
  while [ $SECONDS -lt $deadline ]; do
    body="$(curl -fsS --max-time 2 "$1" 2>/dev/null || true)"
    case "$body" in *"$2"*) return 0 ;; esac
    sleep 0.5
  done
  echo "last answer from $1: $body" >&2
  return 1
}

# run_server NAME ARGS... -> starts a detached container with loopback-only ports; sets $c to
# its name (not echoed: a $(...) subshell would lose the CONTAINERS entry that cleanup needs).
run_server() {
  c="$PREFIX-$1"
  shift
  CONTAINERS+=("$c")
  docker run -d --name "$c" -p 127.0.0.1::8501 -p 127.0.0.1::8500 "$@" >/dev/null
}

# ---- image metadata -------------------------------------------------------------------------
user="$(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
case "${user%%:*}" in
  "" | 0 | root) fail "image USER is '$user' (want a non-root numeric user)" ;;
esac
pass "image runs as USER $user"
entry="$(docker image inspect -f '{{json .Config.Entrypoint}}' "$IMAGE")"
case "$entry" in *tini*) pass "entrypoint $entry" ;; *) fail "entrypoint $entry has no tini" ;; esac
env="$(docker image inspect -f '{{json .Config.Env}}' "$IMAGE")"
case "$env" in *MODEL_NAME=model*MODEL_BASE_PATH=/models*) pass "ENV MODEL_NAME=model MODEL_BASE_PATH=/models" ;;
  *) fail "image env $env lacks the TF Serving contract" ;; esac
for label in title version licenses; do
  v="$(docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")"
  [ -n "$v" ] || fail "label org.opencontainers.image.$label missing"
done
pass "OCI labels present"

# ---- reproducible, minimal runtime: no installers, an SBOM ----------------------------------
for mod in pip setuptools; do
  if docker run --rm --entrypoint /opt/corolla/bin/python "$IMAGE" -c "import $mod" 2>/dev/null \
     || docker run --rm --entrypoint python3 "$IMAGE" -c "import $mod" 2>/dev/null; then
    fail "the runtime image still has $mod"
  fi
done
pass "no pip or setuptools in the runtime image"
sbom="$(docker run --rm --entrypoint cat "$IMAGE" /opt/corolla/share/doc/corolla/sbom.cdx.json)" \
  || fail "no SBOM at /opt/corolla/share/doc/corolla/sbom.cdx.json"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); names={c["name"] for c in d["components"]}
assert d["bomFormat"] == "CycloneDX" and {"onnxruntime", "numpy", "grpcio"} <= names, names
print(len(names))' "$sbom" >"$WORK/sbom-count" || fail "SBOM lacks the serving dependencies"
pass "CycloneDX SBOM: $(cat "$WORK/sbom-count") Python packages"

# ---- a model, written by the image itself (command passthrough) ------------------------------
mkdir -p "$WORK/models" "$WORK/config"
chmod 0777 "$WORK/models"
docker run --rm -v "$WORK/models:/out" "$IMAGE" corolla make-demo-model /out/colors >/dev/null \
  || fail "docker run IMAGE corolla make-demo-model"
[ -f "$WORK/models/colors/1/model.onnx" ] || fail "make-demo-model wrote no version 1"
pass "command passthrough: corolla make-demo-model wrote models/colors/1"
cat >"$WORK/config/monitoring.config" <<'EOF'
prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }
EOF
cat >"$WORK/config/models.config" <<'EOF'
model_config_list {
  config { name: "colors" base_path: "/models/colors" model_platform: "onnx" }
  config { name: "tints" base_path: "/models/colors" model_platform: "onnx" }
}
EOF
chmod -R a+rX "$WORK"
docker run --rm --entrypoint /opt/corolla/bin/python -v "$WORK:/w" --user 0 "$IMAGE" -c \
  "from PIL import Image; Image.new('RGB', (96, 64), (220, 20, 30)).save('/w/red.jpg')"

# ---- 1. the tensorflow/serving contract: MODEL_NAME + a model under /models ------------------
run_server env --read-only --tmpfs /tmp -e MODEL_NAME=colors \
  -v "$WORK/models/colors:/models/colors:ro" -v "$WORK/config:/config:ro" \
  -v "$WORK/red.jpg:/samples/red.jpg:ro" "$IMAGE" --monitoring_config_file=/config/monitoring.config
rest="http://127.0.0.1:$(host_port "$c" 8501)"
wait_for "$rest/v1/models/colors" '"AVAILABLE"' 60 || fail "model colors not AVAILABLE"
pass "MODEL_NAME=colors -v .../colors:/models/colors, read-only root fs: $(curl -fsS "$rest/v1/models/colors")"
out="$(curl -fsS -X POST -H 'Content-Type: image/jpeg' --data-binary "@$WORK/red.jpg" \
  "$rest/v1/models/colors:predict")"
case "$out" in *'"label":"red"'*) pass "REST predict (image/jpeg): red" ;; *) fail "predict: $out" ;; esac
json="$(python3 -c 'import json; print(json.dumps({"instances": [[[[0.0, 0.0, 0.9]] * 64] * 64]}))')"
out="$(curl -fsS -X POST -d "$json" "$rest/v1/models/colors:predict")"
python3 -c 'import json,sys; p=json.loads(sys.argv[1])["predictions"][0]; assert max(range(5), key=p.__getitem__) == 2, p' "$out" \
  || fail "TF Serving JSON predict: $out"
pass "REST predict (TF Serving JSON instances): blue"
for path in /v2/health/live /v2/health/ready /monitoring/prometheus/metrics; do
  code="$(curl -s -o /dev/null -w '%{http_code}' "$rest$path")"
  [ "$code" = 200 ] || fail "GET $path -> $code"
done
pass "GET /v2/health/live, /v2/health/ready, /monitoring/prometheus/metrics (flag passed through) -> 200"
docker exec "$c" python -c '
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel("127.0.0.1:8500") as ch:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert r.status == health_pb2.HealthCheckResponse.SERVING, r
' || fail "gRPC health check on :8500"
pass "gRPC :8500 health: SERVING"
if docker exec "$c" corolla predict --help >/dev/null 2>&1; then
  out="$(docker exec "$c" corolla predict colors /samples/red.jpg --protocol grpc --top_k 1)"
  case "$out" in *red*) pass "gRPC Predict (corolla predict --protocol grpc): red" ;;
    *) fail "gRPC predict: $out" ;; esac
fi
[ "$(docker exec "$c" id -u)" = 10001 ] || fail "server runs as uid $(docker exec "$c" id -u)"
pid1="$(docker exec "$c" cat /proc/1/cmdline | tr '\0' ' ')"
case "$pid1" in *tini*) pass "PID 1: $pid1; server uid 10001" ;; *) fail "PID 1 is $pid1" ;; esac
deadline=$((SECONDS + 45))
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$c")" = healthy ]; do
  [ $SECONDS -lt $deadline ] || fail "HEALTHCHECK: $(docker inspect -f '{{json .State.Health}}' "$c")"
  sleep 1
done
pass "Docker HEALTHCHECK: healthy"
start=$SECONDS
docker stop -t 30 "$c" >/dev/null
code="$(docker inspect -f '{{.State.ExitCode}}' "$c")"
[ "$code" = 0 ] || fail "docker stop: exit code $code"
# (logs into a variable first: `docker logs | grep -q` fails under pipefail when grep exits early)
logs="$(docker logs "$c" 2>&1)"
grep -q "shutdown requested" <<<"$logs" || fail "no graceful shutdown in the log"
grep -q "corolla.server: stopped" <<<"$logs" || fail "server did not report 'stopped'"
pass "docker stop: graceful drain, exit code 0 in $((SECONDS - start))s"

# ---- 1b. PORT (Cloud Run, Knative): the REST port; the HEALTHCHECK follows it ------------------
c="$PREFIX-port"
CONTAINERS+=("$c")
docker run -d --name "$c" --read-only --tmpfs /tmp -e PORT=8080 -e COROLLA_CPUS=1 \
  -e MODEL_NAME=colors -v "$WORK/models/colors:/models/colors:ro" -p 127.0.0.1::8080 \
  "$IMAGE" >/dev/null
rest="http://127.0.0.1:$(host_port "$c" 8080)"
wait_for "$rest/v1/models/colors" '"AVAILABLE"' 60 || fail "PORT=8080: not serving on 8080"
logs="$(docker logs "$c" 2>&1)"
grep -q "REST API port 8080 from \$PORT" <<<"$logs" || fail "PORT=8080 not reported"
grep -q "sizing thread pools for 1 CPU(s)" <<<"$logs" || fail "COROLLA_CPUS=1 not honoured"
deadline=$((SECONDS + 45))
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$c")" = healthy ]; do
  [ $SECONDS -lt $deadline ] || fail "HEALTHCHECK with PORT: $(docker inspect -f '{{json .State.Health}}' "$c")"
  sleep 1
done
pass "PORT=8080: REST on 8080, HEALTHCHECK healthy; COROLLA_CPUS=1 sizes for 1 CPU"
docker rm -f "$c" >/dev/null

# ---- 2. --model_config_file passed through as an argument -------------------------------------
run_server config --read-only --tmpfs /tmp -v "$WORK/models:/models:ro" \
  -v "$WORK/config:/config:ro" "$IMAGE" --model_config_file=/config/models.config
rest="http://127.0.0.1:$(host_port "$c" 8501)"
wait_for "$rest/v1/models/tints" '"AVAILABLE"' 60 || fail "--model_config_file: tints not AVAILABLE"
wait_for "$rest/v1/models/colors" '"AVAILABLE"' 10 || fail "--model_config_file: colors not AVAILABLE"
pass "--model_config_file=/config/models.config: colors and tints AVAILABLE"
docker stop "$c" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$c")" = 0 ] || fail "config server exit code"

# ---- 3. nothing mounted: the embedded default model -----------------------------------------
run_server default "$IMAGE"
rest="http://127.0.0.1:$(host_port "$c" 8501)"
if docker exec "$c" python -c 'import corolla.serve_options as c, os, sys; sys.exit(not os.path.isdir(c.default_model_base_path()))' 2>/dev/null; then
  wait_for "$rest/v1/models/flowers" '"AVAILABLE"' 90 || fail "embedded default model not AVAILABLE"
  pass "no model mounted: embedded default model flowers AVAILABLE"
else
  sleep 2
  logs="$(docker logs "$c" 2>&1)"
  grep -q "embedded default model" <<<"$logs" \
    || fail "entrypoint did not fall back to the embedded default model"
  echo "skip embedded default model: this build of the package has none (src/corolla/default_model)"
fi

echo "docker smoke test: all checks passed ($IMAGE)"
