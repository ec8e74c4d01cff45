#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 from Debian's own packages, without a
# container registry: debootstrap writes a root filesystem, `docker import` turns it into an image.
#
#   sudo scripts/build-base-image.sh                 # -> corolla-base:bookworm
#   sudo scripts/build-base-image.sh my-base:tag     # another name
#
# Then:  docker build -f deploy/Dockerfile --build-arg BASE=corolla-base:bookworm -t corolla .
#
# Where a registry is reachable, skip this: deploy/Dockerfile defaults to python:3.11-slim-bookworm.
#
# Needs root, debootstrap and a running Docker daemon. Environment:
#   MIRROR     Debian mirror (default http://deb.debian.org/debian)
#   SECURITY   Debian security mirror (default http://deb.debian.org/debian-security)
#   WORKDIR    where the root filesystem is built (default: a temporary directory, removed after)
#   KEEP_ROOTFS=1  keep WORKDIR/rootfs after the import (for chroot experiments)
set -euo pipefail

TAG="${1:-corolla-base:bookworm}"
SUITE=bookworm
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"
# python3-venv brings ensurepip (the Dockerfile makes a venv); ca-certificates for pip over TLS.
PACKAGES="python3,python3-venv,ca-certificates"

if [ "$(id -u)" -ne 0 ]; then
  echo "build-base-image.sh: needs root (debootstrap creates device nodes and chroots)" >&2
  exit 1
fi
for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || {
    echo "build-base-image.sh: $tool not found (apt-get install -y debootstrap docker.io)" >&2
    exit 1
  }
done
docker info >/dev/null 2>&1 || {
  echo "build-base-image.sh: the Docker daemon is not reachable" >&2
  exit 1
}

if [ -n "${WORKDIR:-}" ]; then
  mkdir -p "$WORKDIR"
else
  WORKDIR="$(mktemp -d /tmp/corolla-base.XXXXXX)"
fi
ROOTFS="$WORKDIR/rootfs"

cleanup() {
  # Never leave pseudo filesystems mounted inside the tree we are about to delete.
  for m in proc dev/pts dev sys; do
    if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m" || true; fi
  done
  if [ "${KEEP_ROOTFS:-0}" != 1 ]; then
    rm -rf "$WORKDIR"
  fi
}
trap cleanup EXIT

rm -rf "$ROOTFS"
echo ">> debootstrap $SUITE ($MIRROR) into $ROOTFS"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"

# Updates and security fixes, like the official Debian images.
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
# Container-friendly apt: no recommends, no docs or man pages, no cached .debs.
cat >"$ROOTFS/etc/apt/apt.conf.d/90container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/90container" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
echo ">> apt-get upgrade inside the root filesystem"
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
  'apt-get update -q && apt-get -y -q upgrade && apt-get clean'
umount "$ROOTFS/proc"

# Slim down and make the tree image-shaped: Docker writes resolv.conf/hosts/hostname at run time.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/* \
  "$ROOTFS"/usr/share/doc/*/changelog* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
find "$ROOTFS/usr/lib/python3"* -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

PYVER="$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
echo ">> importing as $TAG (Debian $(cat "$ROOTFS/etc/debian_version"), Python $PYVER)"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.title=corolla-base" \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase + python3 (debootstrap)\"" \
  --change "LABEL org.opencontainers.image.base.name=debian:$SUITE" \
  --message "debootstrap --variant=minbase $SUITE + $PACKAGES" \
  - "$TAG"
docker image ls "$TAG"
