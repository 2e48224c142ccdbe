#!/usr/bin/env bash
# A LOCAL STAND-IN for the pinned base image (python:3.11.14-slim-bookworm),
# for a machine that reaches a Debian mirror but not Docker Hub, so that
# docker/smoke.sh can still build and run the image there:
#
#   sudo docker/standin-base.sh            # tags local/python-standin:3.11-bookworm
#   PYTHON_IMAGE=local/python-standin:3.11-bookworm docker/smoke.sh
#
# It is NOT the official image: Debian bookworm (debootstrap --variant=minbase)
# with Debian's own Python 3.11 (3.11.2, where the pinned image has 3.11.14),
# installed as a venv at /usr/local so that python, pip and installed scripts
# are where the official image puts them (/usr/local/bin,
# /usr/local/lib/python3.11/site-packages). Never publish an image built on it.
#
# Needs root, debootstrap and a container engine. Environment:
#   MIRROR    Debian mirror (default: http://deb.debian.org/debian)
#   EXTRA_CA  CA certificate files (PEM, space-separated) the build must trust,
#             e.g. a TLS-intercepting egress proxy's in front of PyPI
#   DOCKER    the docker client (default: docker)
set -euo pipefail

TAG=${1:-local/python-standin:3.11-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=1

[ "$(id -u)" = 0 ] || {
    echo "debootstrap needs root" >&2
    exit 1
}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/headcount-standin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -20 "$WORK/debootstrap.log" >&2
    exit 1
}
rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
cat >"$WORK/rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
tar --numeric-owner -C "$WORK/rootfs" -c . | $DOCKER import - local/debian-bookworm-minbase:debootstrap
rm -rf "$WORK/rootfs"

mkdir "$WORK/ctx" "$WORK/ctx/ca"
for ca in ${EXTRA_CA:-}; do cp "$ca" "$WORK/ctx/ca/$(basename "$ca" .pem).crt"; done
cat >"$WORK/ctx/Dockerfile" <<'EOF'
FROM local/debian-bookworm-minbase:debootstrap
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates \
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >/etc/pip.conf \
    && python3.11 -m venv /usr/local \
    && rm /usr/local/bin/activate* /usr/local/bin/Activate.ps1 \
    && python --version && pip --version
LABEL org.opencontainers.image.description="LOCAL STAND-IN for python:3.11.14-slim-bookworm: debootstrap bookworm + Debian python3.11; not the official image"
CMD ["python3"]
EOF
$DOCKER build -q -t "$TAG" "$WORK/ctx"
$DOCKER run --rm "$TAG" python -c 'import sys; print("stand-in base", sys.version.split()[0], sys.prefix)'
echo "tagged $TAG"
