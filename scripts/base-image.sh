#!/usr/bin/env bash
# Make the local base image the container tests pass as BASE_IMAGE (Docker Hub is not reachable).
#
# A minimal Debian bookworm root file system made with debootstrap, with Python 3.11, pip, venv and
# the CA certificates, imported with `docker import`. It behaves like the official python and pytorch
# bases where the generated Dockerfiles rely on it: `python` is python3 and `pip install` may install
# system-wide (Debian's EXTERNALLY-MANAGED marker is removed).
#
# Usage: scripts/base-image.sh [IMAGE]        prints the image name on stdout when it is ready
#
# Caching: nothing is done when the image already exists; the root file system tarball is kept under
# the engine's state directory, so an engine with an empty data root re-imports it in seconds.
#
# Environment:
#   YMIR_BASE_IMAGE    image name (default ymir-test-base:bookworm-py311); the argument wins
#   YMIR_DOCKER_STATE  state directory shared with docker-engine.sh (default /var/lib/ymir-template-docker)
#   YMIR_DOCKER_CLI    docker client (default /usr/bin/docker)
#   DEBIAN_MIRROR      Debian mirror (default http://deb.debian.org/debian)
#   DOCKER_HOST        the engine (default: the socket of docker-engine.sh)
set -euo pipefail

IMAGE="${1:-${YMIR_BASE_IMAGE:-ymir-test-base:bookworm-py311}}"
STATE_DIR="${YMIR_DOCKER_STATE:-/var/lib/ymir-template-docker}"
DOCKER="${YMIR_DOCKER_CLI:-/usr/bin/docker}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PACKAGES=ca-certificates,python3,python3-pip,python3-venv,python-is-python3
export DOCKER_HOST="${DOCKER_HOST:-unix://$STATE_DIR/docker.sock}"

CACHE_DIR="$STATE_DIR/cache"
# The tarball's name records what went into it, so changing the recipe makes a new one.
RECIPE_VERSION=1
TARBALL="$CACHE_DIR/rootfs-$SUITE-$(printf '%s' "$PACKAGES" | md5sum | cut -c1-8)-v$RECIPE_VERSION.tar"

log() {
    printf 'base-image: %s\n' "$*" >&2
}

# debootstrap mounts /proc, /sys (and may bind /dev) inside the tree: unmount whatever is left
# there before deleting it, and never let rm cross into another file system.
remove_rootfs() {
    local dir="$1" mnt
    [ -d "$dir" ] || return 0
    awk -v prefix="$dir/" 'index($2, prefix) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mnt; do
            umount -l "$mnt" || true
        done
    rm -rf --one-file-system "$dir"
}

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists"
    printf '%s\n' "$IMAGE"
    exit 0
fi

if [ ! -f "$TARBALL" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
        log "debootstrap is missing; run scripts/docker-engine.sh install"
        exit 1
    }
    mkdir -p "$CACHE_DIR"
    rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    # The root file system holds device nodes and root-owned files: always remove it.
    trap 'remove_rootfs "$rootfs"; rm -f "$TARBALL.tmp"' EXIT
    log "debootstrap $SUITE ($PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
    # Like the official python images: pip installs into the system interpreter.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    # Package lists and caches only make the image bigger; builds run apt-get update themselves.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$rootfs/etc/apt/sources.list"
    tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    remove_rootfs "$rootfs"
    trap - EXIT
fi

log "importing $TARBALL as $IMAGE"
"$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    "$TARBALL" "$IMAGE" >/dev/null
printf '%s\n' "$IMAGE"
