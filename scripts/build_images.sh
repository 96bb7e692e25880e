#!/usr/bin/env bash
# Builds the local images for a machine with a Docker Engine but no registry:
#   base      debootstrapped Debian (minbase) imported with `docker import`
#   postgres  PostgreSQL from Debian's packages on that base (compose/postgres)
#   etcd      etcd 3.4 from Debian's etcd-server on that base (compose/etcd), for cluster mode
#   sentinel  the daemon (Dockerfile), from a binary built here
# An image whose recipe has not changed is reused (the recipe's hash is an image label).
#
# Usage: scripts/build_images.sh [base|postgres|etcd|sentinel|all]...   (default: all)
# Variables: BASE_IMAGE, POSTGRES_IMAGE, ETCD_IMAGE, SENTINEL_IMAGE (tags), DEBIAN_SUITE (bookworm),
#   DEBIAN_MIRROR, PG_MAJOR (15), SENTINEL_BINARY (a built binary; default: a release build).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-sentinel-remedy/debian:bookworm}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-sentinel-remedy/postgres:15}"
SENTINEL_IMAGE="${SENTINEL_IMAGE:-sentinel-remedy:local}"
ETCD_IMAGE="${ETCD_IMAGE:-sentinel-remedy/etcd:3.4}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PG_MAJOR="${PG_MAJOR:-15}"
LABEL=org.sentinel-remedy.recipe

say() { printf 'build_images: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
# One build at a time (parallel tests may all ask for the images at once).
exec 9>"${TMPDIR:-/tmp}/sentinel-remedy-build-images.lock"
flock 9
docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine (is it running? is DOCKER_HOST right? are you in the docker group?)"

recipe_of() { cat "$@" | sha256sum | cut -c1-16; }
current_recipe() { docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }

build_base() {
    local recipe
    recipe="$(printf '%s %s minbase ca-certificates v1' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" | sha256sum | cut -c1-16)"
    if [ "$(current_recipe "$BASE_IMAGE")" = "$recipe" ]; then
        say "reusing $BASE_IMAGE"; return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    local rootfs
    rootfs="$(mktemp -d /var/tmp/sentinel-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' RETURN
    say "debootstrapping $DEBIAN_SUITE into $rootfs"
    debootstrap --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    say "importing $BASE_IMAGE"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change "LABEL $LABEL=$recipe" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
        --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
}

build_postgres() {
    local recipe
    recipe="$(recipe_of "$ROOT/compose/postgres/Dockerfile" "$ROOT/compose/postgres/docker-entrypoint.sh" <(echo "$BASE_IMAGE $(docker image inspect --format '{{.Id}}' "$BASE_IMAGE") $PG_MAJOR"))"
    if [ "$(current_recipe "$POSTGRES_IMAGE")" = "$recipe" ]; then
        say "reusing $POSTGRES_IMAGE"; return
    fi
    say "building $POSTGRES_IMAGE"
    docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PG_MAJOR=$PG_MAJOR" \
        --label "$LABEL=$recipe" -t "$POSTGRES_IMAGE" "$ROOT/compose/postgres" >/dev/null
}

build_etcd() {
    local recipe
    recipe="$(recipe_of "$ROOT/compose/etcd/Dockerfile" <(echo "$BASE_IMAGE $(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")"))"
    if [ "$(current_recipe "$ETCD_IMAGE")" = "$recipe" ]; then
        say "reusing $ETCD_IMAGE"; return
    fi
    say "building $ETCD_IMAGE"
    docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "$LABEL=$recipe" -t "$ETCD_IMAGE" "$ROOT/compose/etcd" >/dev/null
}

build_sentinel() {
    local bin="${SENTINEL_BINARY:-}"
    if [ -z "$bin" ]; then
        say "building the release binary"
        # The etcd client (cluster mode) is compiled from protobuf definitions with protoc.
        (source "$ROOT/scripts/lib/deps.sh" && ensure_protoc)
        (cd "$ROOT" && cargo build --release --locked --bin sentinel-remedy >&2)
        bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/sentinel-remedy"
    fi
    [ -x "$bin" ] || die "no binary at $bin"
    local recipe
    recipe="$(recipe_of "$bin" "$ROOT/Dockerfile" <(echo "$BASE_IMAGE $(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")"))"
    if [ "$(current_recipe "$SENTINEL_IMAGE")" = "$recipe" ]; then
        say "reusing $SENTINEL_IMAGE"; return
    fi
    local ctx
    ctx="$(mktemp -d /var/tmp/sentinel-ctx.XXXXXX)"
    trap 'rm -rf "$ctx"' RETURN
    install -D "$bin" "$ctx/prebuilt/sentinel-remedy"
    cp "$ROOT/Dockerfile" "$ctx/Dockerfile"
    say "building $SENTINEL_IMAGE"
    # The base stands in for both the Rust image (the binary is prebuilt) and the runtime.
    docker build -q --build-arg "RUST_IMAGE=$BASE_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
        --label "$LABEL=$recipe" -t "$SENTINEL_IMAGE" "$ctx" >/dev/null
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(all)
for w in "${what[@]}"; do
    case "$w" in
        base) build_base ;;
        postgres) build_base; build_postgres ;;
        etcd) build_base; build_etcd ;;
        sentinel) build_base; build_sentinel ;;
        all) build_base; build_postgres; build_etcd; build_sentinel ;;
        *) die "unknown image '$w' (use base, postgres, etcd, sentinel or all)" ;;
    esac
done
# Untagged leftovers of ours only: the build stage the classic builder keeps, and images a
# rebuild replaced. `prune` never touches a tagged image.
docker image prune -f --filter label=org.sentinel-remedy.stage=build >/dev/null
docker image prune -f --filter "label=$LABEL" >/dev/null
say "images: $BASE_IMAGE $POSTGRES_IMAGE $ETCD_IMAGE $SENTINEL_IMAGE"
