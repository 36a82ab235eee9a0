#!/usr/bin/env bash
# Make sure a Python 3.11 Debian bookworm base image exists for the Dockerfile's BASE_IMAGE.
#
# Prints the image name to use on stdout. Tries, in order:
#   1. $BASE_IMAGE (default python:3.11-slim-bookworm) for $PLATFORM already present locally or pullable;
#   2. a local stand-in, optml-base:bookworm, built with debootstrap + `docker import`.
# The stand-in exists for air-gapped hosts and registries-less CI machines: it reads the Debian
# mirror from this machine's apt configuration, so no host name is written into the project.
# $PLATFORM (default linux/amd64, all SageMaker runs): a local image of another architecture (the
# python image an arm64 laptop pulled for itself) does not count.
set -euo pipefail

base_image=${BASE_IMAGE:-python:3.11-slim-bookworm}
local_image=${LOCAL_BASE_IMAGE:-optml-base:bookworm}
platform=${PLATFORM:-linux/amd64}

log() { echo "base-image: $*" >&2; }
for_platform() { [ "$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$1" 2>/dev/null)" = "$platform" ]; }

if for_platform "$base_image"; then
  echo "$base_image"; exit 0
fi
if [ "${OPTML_SKIP_PULL:-}" != "1" ] && timeout 60 docker pull -q --platform "$platform" "$base_image" >/dev/null 2>&1; then
  echo "$base_image"; exit 0
fi
if for_platform "$local_image"; then
  log "$base_image cannot be pulled; using local $local_image"
  echo "$local_image"; exit 0
fi

apt_mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    # deb822 format: the first URIs line of a stanza whose Suites name bookworm (not -security).
    uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "$uri"
}

command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
# debootstrap can only build this machine's own architecture.
host_platform="linux/$(dpkg --print-architecture)"
if [ "$host_platform" != "$platform" ]; then
  log "$base_image for $platform cannot be pulled, and debootstrap here builds $host_platform only:" \
    "pull it where a registry is reachable (docker pull --platform $platform $base_image), then docker save | docker load"
  exit 1
fi
mirror=$(apt_mirror)
[ -n "$mirror" ] || { log "no Debian bookworm mirror found in the apt configuration"; exit 1; }

rootfs=$(mktemp -d /tmp/optml-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "$base_image cannot be pulled; building $local_image with debootstrap from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >&2
# Slim it like the official image does: no apt lists, no docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import --platform "$platform" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$local_image" >&2
echo "$local_image"
