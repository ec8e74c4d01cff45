#!/usr/bin/env bash
# Regenerate the image's hash-pinned dependency locks (deploy/Dockerfile installs them with
# pip --require-hashes, so a build installs exactly these files or fails):
#   deploy/requirements.lock        [project].dependencies of pyproject.toml and its `storage`
#                                   extra (s3://, gs://, redis:// model stores and prediction
#                                   caches: the image reads buckets directly)
#   deploy/build-requirements.lock  deploy/build-requirements.in (setuptools, wheel, SBOM tool)
#   deploy/compose/store-requirements.lock  the compose stack's S3-compatible store (moto)
#
#   scripts/lock-image-deps.sh            # after changing dependencies in pyproject.toml
#   UPGRADE=1 scripts/lock-image-deps.sh  # take the newest releases that fit
#
# Needs uv (`pip install uv`, or on PATH) and the package index. Resolved for the image's
# Python (3.11, Debian bookworm) on Linux; every file of each pinned release gets its hash, so
# the same lock serves amd64 and arm64 builds.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-$(command -v uv || echo .venv/bin/uv)}"
[ -x "$UV" ] || { echo "lock-image-deps.sh: uv not found (pip install uv)" >&2; exit 1; }
args=(--python-version 3.11 --python-platform linux --generate-hashes --no-annotate -q)
[ "${UPGRADE:-0}" = 1 ] && args+=(--upgrade)
"$UV" pip compile "${args[@]}" --custom-compile-command scripts/lock-image-deps.sh \
  --extra storage pyproject.toml -o deploy/requirements.lock
"$UV" pip compile "${args[@]}" --custom-compile-command scripts/lock-image-deps.sh \
  deploy/build-requirements.in -o deploy/build-requirements.lock
"$UV" pip compile "${args[@]}" --custom-compile-command scripts/lock-image-deps.sh \
  deploy/compose/store-requirements.in -o deploy/compose/store-requirements.lock
echo "locked: $(grep -c '==' deploy/requirements.lock) runtime, $(grep -c '==' deploy/build-requirements.lock) build packages"
