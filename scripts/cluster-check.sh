#!/usr/bin/env bash
# Fault tolerance of the multi-replica stack (deploy/compose: 3 Corolla replicas behind HAProxy,
# models from a shared store), under load: (a) a new model version, (b) one replica SIGKILLed,
# (c) a rolling restart. Prints requests sent and failed per step (scripts/cluster_check.py).
#
#   scripts/cluster-check.sh                 # build the images from this tree, check, tear down
#   IMAGE=corolla:1.2 scripts/cluster-check.sh   # check an image built elsewhere, as it is
#
# Environment:
#   IMAGE         Corolla image (default corolla:dev, built from this tree on every run: an
#                 unchanged tree hits Docker's layer cache, a changed one is never checked
#                 against a stale image). A named IMAGE is used as it is, built only when missing
#   BUILD=0|1     force skipping (0) or doing (1) that build
#   BASE          base image for the builds (default: corolla-base:bookworm when it exists,
#                 else built with scripts/build-base-image.sh when no registry image is there)
#   PYTHON        interpreter with corolla, httpx and grpcio (default .venv/bin/python)
#   COROLLA_PHOTOS  a folder of JPEG photos to send (default: shared/datasets/flower_photos
#                 beside the repository when present, else generated images)
#   RESULTS       write the results as JSON here
#   KEEP=1        leave the stack running (tear down: the printed `down` command)
#   START_DOCKERD=1  start dockerd in the background when no daemon answers (CI, as root)
#
# Exit status: 0 when (a) and (c) failed no request, 1 otherwise, 2 when Docker is missing.
# Only loopback addresses are published and loaded; the stack has its own project name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
if [ -z "${IMAGE:-}" ]; then IMAGE=corolla:dev; BUILD="${BUILD:-1}"; fi
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PROJECT="corollacheck$$"
DOCKERD_PID=""
WORK="$(mktemp -d /tmp/corolla-cluster.XXXXXX)"

STACK_UP=0
COMPOSE=()

log() { printf '>> %s\n' "$*"; }

cleanup() {
  local rc=$?
  if [ "$STACK_UP" = 1 ] && [ "${KEEP:-0}" = 1 ]; then
    log "left running; tear down with: COROLLA_SECRETS_DIR=$WORK/secrets ${COMPOSE[*]} down -v"
    return
  fi
  if [ "$STACK_UP" = 1 ]; then
    if [ $rc -ne 0 ]; then
      "${COMPOSE[@]}" logs --tail 30 >&2 2>/dev/null || true
    fi
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  if [ -n "${DOCKERD_PID:-}" ]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT


if ! command -v docker >/dev/null; then
  echo "cluster-check: SKIPPED: docker is not installed" >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1 && [ "${START_DOCKERD:-0}" = 1 ] && command -v dockerd >/dev/null; then
  log "starting dockerd (log: /tmp/corolla-dockerd.log; stopped again at the end)"
  nohup dockerd >/tmp/corolla-dockerd.log 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
if ! docker info >/dev/null 2>&1; then
  echo "cluster-check: SKIPPED: no Docker daemon answers (START_DOCKERD=1 starts one as root)" >&2
  exit 2
fi
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  echo "cluster-check: SKIPPED: neither 'docker compose' nor docker-compose is installed" >&2
  exit 2
fi
COMPOSE+=(-p "$PROJECT" -f "$ROOT/deploy/compose/docker-compose.yml")

# ---- images ------------------------------------------------------------------------------------
if [ -z "${BASE:-}" ]; then
  if docker image inspect corolla-base:bookworm >/dev/null 2>&1; then
    BASE=corolla-base:bookworm
  elif docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
    BASE=python:3.11-slim-bookworm
  else
    log "no base image here: building corolla-base:bookworm (debootstrap, a few minutes)"
    scripts/build-base-image.sh corolla-base:bookworm
    BASE=corolla-base:bookworm
  fi
fi
if [ "${BUILD:-0}" = 1 ] || { [ "${BUILD:-}" != 0 ] && ! docker image inspect "$IMAGE" >/dev/null 2>&1; }; then
  log "building $IMAGE from deploy/Dockerfile (BASE=$BASE)"
  docker build -q -f deploy/Dockerfile --build-arg "BASE=$BASE" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg PIP_INDEX_URL --build-arg PIP_EXTRA_INDEX_URL --build-arg PIP_TRUSTED_HOST \
    -t "$IMAGE" . >/dev/null
fi

# ---- the stack ---------------------------------------------------------------------------------
mkdir -p "$WORK/secrets"
KEY="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
ADMIN="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
printf '# cluster-check keys\n%s\n%s @admin\n' "$KEY" "$ADMIN" >"$WORK/secrets/api-keys"
chmod 0755 "$WORK/secrets" && chmod 0644 "$WORK/secrets/api-keys"  # the server runs as 10001
export COROLLA_IMAGE="$IMAGE" BASE COROLLA_SECRETS_DIR="$WORK/secrets" \
  COROLLA_REST_PORT=0 COROLLA_GRPC_PORT=0


log "bringing up deploy/compose (project $PROJECT)"
start=$SECONDS
STACK_UP=1
"${COMPOSE[@]}" up -d --build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
lb="$("${COMPOSE[@]}" ps -q lb)"
rest_port="$(docker port "$lb" 8501/tcp | head -n1 | sed 's/.*://')"
grpc_port="$(docker port "$lb" 8500/tcp | head -n1 | sed 's/.*://')"
log "LB: REST 127.0.0.1:$rest_port, gRPC 127.0.0.1:$grpc_port"

photos="${COROLLA_PHOTOS:-}"
if [ -z "$photos" ]; then
  for d in "$ROOT/shared/datasets/flower_photos" "$ROOT/../shared/datasets/flower_photos" \
           /work/shared/datasets/flower_photos; do
    if [ -d "$d" ]; then photos="$d"; break; fi
  done
fi

args=(--compose "${COMPOSE[*]}" --rest-url "http://127.0.0.1:$rest_port"
      --grpc-target "127.0.0.1:$grpc_port" --api-key "$KEY")
[ -n "$photos" ] && args+=(--photos "$photos")
[ -n "${RESULTS:-}" ] && args+=(--json "$RESULTS")
log "stack up in $((SECONDS - start)) s; steps under load:"
"$PYTHON" scripts/cluster_check.py "${args[@]}"
log "cluster check passed"
