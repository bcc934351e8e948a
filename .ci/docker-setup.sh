#!/usr/bin/env bash
# Set up a Docker engine and build the container image `review-nlp:test` without a registry.
#
# Steps, each timed:
#   1. install docker.io and debootstrap;
#   2. start dockerd without a bridge network, because containers run with --network none or
#      --network host only;
#   3. build a Debian bookworm base image with Python by debootstrap and import it as
#      local/debian-py:bookworm;
#   4. download the runtime wheels into wheelhouse/;
#   5. build the image with --network none from those wheels.
# Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

REPO=$(pwd)
BASE_IMAGE=${BASE_IMAGE:-local/debian-py:bookworm}
IMAGE=${IMAGE:-review-nlp:test}
LOG_DIR=${LOG_DIR:-$REPO/.docker-base}
ROOTFS=${ROOTFS:-$LOG_DIR/rootfs}
# Inside the build context, where the Dockerfile's WHEELHOUSE build argument finds it.
WHEELHOUSE=$REPO/wheelhouse
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd-review-nlp.log}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}

mkdir -p "$LOG_DIR"
step_started=0
begin() {
    step_started=$(date +%s)
    echo "== $1"
}
end() {
    echo "== $1 took $(( $(date +%s) - step_started )) s"
}

# 1. Packages.
begin "install docker.io and debootstrap"
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap >/dev/null
fi
end "packages"

# 2. The engine: no default bridge, no iptables rules, no masquerading.
begin "start dockerd"
if ! docker info >/dev/null 2>&1; then
    nohup dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        >"$DOCKERD_LOG" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not respond within 60 s; its log ($DOCKERD_LOG) ends with:" >&2
        tail -n 20 "$DOCKERD_LOG" >&2
        exit 1
    fi
fi
end "dockerd"

# 3. The base image: Debian bookworm with Python 3.11, venv and pip, imported locally.
begin "base image $BASE_IMAGE"
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
        rm -rf "$ROOTFS"
        mkdir -p "$ROOTFS"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$LOG_DIR/debootstrap.log" 2>&1 \
            || { tail -n 20 "$LOG_DIR/debootstrap.log" >&2; exit 1; }
        # apt caches are not needed in the image.
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    fi
    tar -C "$ROOTFS" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$BASE_IMAGE" >/dev/null
fi
end "base image"

# 4. Wheels for the image's --network none build. They are the runtime requirements at the
# versions of constraints.txt, which the tests passed with, and the build backend that
# pyproject.toml names. Torch is the CPU build that this machine's pip finds on local disk.
begin "wheelhouse $WHEELHOUSE"
# The stamp records what the wheelhouse was downloaded for, so an unchanged one is reused.
stamp="torch==$TORCH_VERSION $(cat container/requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$WHEELHOUSE/.downloaded-for" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    {
        "$PYTHON" -m pip download --no-deps -d "$WHEELHOUSE" "torch==$TORCH_VERSION" &&
        "$PYTHON" -m pip download --only-binary=:all: -d "$WHEELHOUSE" -c constraints.txt \
            -r container/requirements.txt "torch==$TORCH_VERSION" "setuptools>=68" wheel
    } >"$LOG_DIR/wheelhouse.log" 2>&1 || { tail -n 30 "$LOG_DIR/wheelhouse.log" >&2; exit 1; }
    echo "$stamp" >"$WHEELHOUSE/.downloaded-for"
fi
end "wheelhouse"

# 5. The image, built from this checkout with no network.
begin "build $IMAGE"
DOCKER_BUILDKIT=0 docker build --network none \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg WHEELHOUSE=wheelhouse \
    -t "$IMAGE" . >"$LOG_DIR/build.log" 2>&1 || { tail -n 30 "$LOG_DIR/build.log" >&2; exit 1; }
end "image"
docker image ls "$IMAGE"
