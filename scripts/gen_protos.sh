#!/usr/bin/env bash
# Regenerate src/corolla/protos/gen/ from src/corolla/protos/**/*.proto. Rerunnable.
#
# The generated modules register their descriptors in Corolla's own descriptor pool
# (corolla.protos.pool.POOL) rather than protobuf's default pool, so that TensorFlow,
# tensorflow-serving-api or tritonclient, which define the same symbols (tensorflow.TensorProto,
# inference.ModelInferRequest, ...) in files of their own, can be imported in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
SRC=src/corolla/protos
OUT=$SRC/gen

rm -rf "$OUT"
mkdir -p "$OUT"
mapfile -t PROTOS < <(cd "$SRC" && find . -name '*.proto' -not -path './gen/*' | sed 's|^\./||' | sort)
"$PY" -m grpc_tools.protoc -I "$SRC" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" "${PROTOS[@]}"

# Imports become package-relative: `from tensorflow_serving.apis import x_pb2` ->
# `from corolla.protos.gen.tensorflow_serving.apis import x_pb2`; top-level files
# (`import grpc_predict_v2_pb2 as ...`) -> `from corolla.protos.gen import grpc_predict_v2_pb2 as`.
find "$OUT" \( -name '*.py' -o -name '*.pyi' \) -print0 | xargs -0 sed -i -E \
  -e 's/^from (tensorflow|tensorflow_serving)((\.[A-Za-z0-9_]+)*) import /from corolla.protos.gen.\1\2 import /' \
  -e 's/^import ([A-Za-z0-9_]+_pb2) as /from corolla.protos.gen import \1 as /' \
  -e 's/^import ([A-Za-z0-9_]+_pb2)$/from corolla.protos.gen import \1/'

# Corolla's private descriptor pool instead of the default one.
find "$OUT" -name '*_pb2.py' -print0 | xargs -0 sed -i -E \
  -e 's/^DESCRIPTOR = _descriptor_pool\.Default\(\)\.AddSerializedFile\(/DESCRIPTOR = _corolla_pool.POOL.AddSerializedFile(/' \
  -e 's/^(_sym_db = _symbol_database\.Default\(\))$/\1\nfrom corolla.protos import pool as _corolla_pool/' \
  -e "s/^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')([A-Za-z0-9_.]+)'/\\1corolla.protos.gen.\\2'/"
if grep -rl '_descriptor_pool.Default()' "$OUT" --include='*_pb2.py'; then
  echo "gen_protos.sh: a generated module still uses the default pool" >&2
  exit 1
fi

# protoc writes a *_pb2_grpc.py for every file; keep only those that define a service.
find "$OUT" -name '*_pb2_grpc.py' -print0 | while IFS= read -r -d '' f; do
  grep -q '^class ' "$f" || rm -f "$f"
done

# Every generated directory is a regular package.
find "$OUT" -type d -exec sh -c 'for d; do [ -f "$d/__init__.py" ] || : > "$d/__init__.py"; done' _ {} +
echo '"""Generated protobuf and gRPC modules (scripts/gen_protos.sh); do not edit."""' > "$OUT/__init__.py"
echo "generated $(find "$OUT" -name '*_pb2.py' | wc -l) modules in $OUT"
