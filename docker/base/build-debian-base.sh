#!/usr/bin/env bash
# Build a minimal Debian base image from Debian's packages and import it into
# the local engine, for engines that cannot pull from a registry (air gap,
# no registry mirror). The result is a drop-in for python:3.11-slim in the
# `pip` recipe: python3 (3.11 on bookworm), venv, CA certificates.
#
# usage: docker/base/build-debian-base.sh [IMAGE_NAME] [SUITE]
#   IMAGE_NAME  default: repromatrix/debian-python:bookworm
#   SUITE       default: bookworm
#   DEBIAN_MIRROR  default: http://deb.debian.org/debian
set -euo pipefail

name=${1:-repromatrix/debian-python:bookworm}
suite=${2:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

for tool in debootstrap docker tar; do
  command -v "$tool" >/dev/null || {
    echo "error: '$tool' not found; install it (apt-get install debootstrap docker.io)" >&2
    exit 2
  }
done

if docker image inspect "$name" >/dev/null 2>&1; then
  echo "base image $name already present"
  exit 0
fi

rootfs=$(mktemp -d /tmp/repromatrix-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $suite into $rootfs (from $mirror)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  echo "error: debootstrap failed (log above); check DEBIAN_MIRROR" >&2
  exit 1
}
rm -f "$rootfs.log"
# apt's package lists and caches are dead weight in an image that never runs apt.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*

tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "repromatrix base: debootstrap $suite minbase + python3" \
  - "$name"
echo "imported $name"
