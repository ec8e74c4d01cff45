#!/bin/sh
# Entrypoint of the Corolla image: behaves like tensorflow/serving's tf_serving_entrypoint.sh.
#
#   docker run corolla                          -> serve $MODEL_BASE_PATH/$MODEL_NAME as $MODEL_NAME
#   docker run corolla --flag=value ...         -> the same, with extra TF Serving / Corolla flags
#   docker run corolla --model_config_file=...  -> serve what models.config lists (env ignored)
#   docker run corolla corolla make-demo-model /models/colors   -> run that command instead
#
# MODEL_NAME / MODEL_BASE_PATH are read by `corolla serve` itself (same contract as the TF Serving
# image: the model lives at $MODEL_BASE_PATH/$MODEL_NAME). When neither was changed from the
# image's defaults (MODEL_NAME=model) and nothing is mounted at /models/model, Corolla serves its
# embedded default model (flowers) instead of failing: `docker run -p 8501:8501 corolla` works.
#
# PORT (Cloud Run, Knative, Heroku): when set, it is the REST port, read by `corolla serve`
# itself (--rest_api_port, if given as an argument, still wins); gRPC stays on 8500.
# COROLLA_CPUS (the pod's CPU request, through the Downward API) sizes the thread pools; it is
# read by `corolla serve` too, like --cpus.
#
# `exec` keeps the server as the direct child of tini (PID 1), so SIGTERM reaches it and it drains
# gracefully: readiness false, listeners closed, in-flight requests finished, exit 0.
set -eu

case "${1:-}" in
  "" | -*) ;;             # no arguments or flags: serve
  *) exec "$@" ;;         # a command: run it
esac

model_flag=0
for arg in "$@"; do
  case "$arg" in
    --model_config_file* | --model_name* | --model_base_path*) model_flag=1 ;;
  esac
done
if [ "$model_flag" = 0 ] && [ "${MODEL_NAME:-}" = model ] \
  && [ ! -e "${MODEL_BASE_PATH:-/models}/model" ]; then
  echo "corolla-entrypoint: nothing at ${MODEL_BASE_PATH:-/models}/model and MODEL_NAME not set:" \
    "serving the embedded default model" >&2
  unset MODEL_NAME
fi

if [ -n "${PORT:-}" ]; then
  exec corolla serve --port=8500 "$@"
fi
exec corolla serve --port=8500 --rest_api_port=8501 "$@"
