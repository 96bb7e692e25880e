#!/usr/bin/env bash
# Starts SentinelRemedy as a compose sidecar next to PostgreSQL (or, with --fleet, one daemon
# watching three PostgreSQL containers; with --discover, the same three found by their labels
# with no registry file), and waits until monitoring has begun.
#
#   scripts/quickstart.sh [--fleet|--discover] [--no-build] [--down]
#
# The stacks share the daemon's port (SENTINEL_PORT, 9187): starting one stops another of this
# checkout's quickstart stacks that holds it (said, with the command that brings it back); a
# port held by anything else stops here, naming the holder and the fix. --down removes this
# stack's containers (its volumes, with the incident bundles, are kept; the command to remove
# them too is printed).
#
# Creates compose/.env from .env.template on first run (with a random database password), the
# network, and the images: POSTGRES_IMAGE / SENTINEL_IMAGE when they exist or can be pulled,
# else local builds (scripts/build_images.sh: debootstrap + docker import, no registry needed).
# Works with `docker compose` and `docker-compose`.
set -euo pipefail

FLEET=0
DISCOVER=0
BUILD=1
DOWN=0
for arg in "$@"; do
    case "$arg" in
        --fleet) FLEET=1 ;;
        --discover) FLEET=1; DISCOVER=1 ;;
        --no-build) BUILD=0 ;;
        --down) DOWN=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "quickstart: unknown argument '$arg' (use --fleet, --discover, --no-build, --down)" >&2; exit 64 ;;
    esac
done
export FLEET DISCOVER
# shellcheck source=compose_env.sh
. "$(dirname "$0")/compose_env.sh"

say() { printf 'quickstart: %s\n' "$*"; }
die() { printf 'quickstart: ERROR: %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine (is it running? are you in the docker group?)"

# The flag that starts the stack of a compose file of ours.
flag_of() {
    case "$(basename "$1")" in
        discover.yml) echo "scripts/quickstart.sh --discover" ;;
        fleet.yml) echo "scripts/quickstart.sh --fleet" ;;
        ha.yml) echo "scripts/test_ha.sh --up" ;;
        *) echo "scripts/quickstart.sh" ;;
    esac
}

if [ "$DOWN" = 1 ]; then
    [ -f "$ENV_FILE" ] || die "$ENV_FILE is missing: no quickstart stack was started from this checkout"
    compose down --timeout 10
    NETWORK="$(env_value COMPOSE_NETWORK)"; NETWORK="${NETWORK:-sentinel-remedy}"
    if [ -z "$(docker network inspect -f '{{range .Containers}}x{{end}}' "$NETWORK" 2>/dev/null)" ]; then
        docker network rm "$NETWORK" >/dev/null 2>&1 && say "removed network $NETWORK"
    fi
    say "removed project $COMPOSE_PROJECT_NAME; its volumes (databases, incident bundles) are kept: remove them too with ${COMPOSE_BIN[*]} -p $COMPOSE_PROJECT_NAME -f $COMPOSE_FILE_PATH down -v"
    exit 0
fi

# The daemon's port: another quickstart stack of this checkout that publishes it is stopped
# (its containers and volumes stay; its own command brings it back); anything else holding it
# stops this script with the holder's name and the fix, instead of compose's "port is already
# allocated".
free_port() {
    local port="$1" id name proj files others own=0
    for id in $(docker ps -q --filter "publish=$port"); do
        name="$(docker inspect -f '{{.Name}}' "$id")"; name="${name#/}"
        proj="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$id")"
        files="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project.config_files"}}' "$id")"
        if [ "$proj" = "$COMPOSE_PROJECT_NAME" ]; then own=1; continue; fi # compose updates it
        case "$files" in
            "$COMPOSE_DIR"/*) ;;
            *) die "port $port is published by container $name${proj:+ (compose project $proj)}, not a quickstart stack of this checkout: stop it (docker stop $name) or set SENTINEL_PORT to a free port in $ENV_FILE" ;;
        esac
        others="$(docker ps -q --filter "label=com.docker.compose.project=$proj")"
        say "stopping quickstart stack $proj ($(basename "$files")), which holds port $port; bring it back later with: $(flag_of "$files") (after stopping this one: $(flag_of "$COMPOSE_FILE_PATH") --down)"
        # shellcheck disable=SC2086
        docker stop --time 10 $others >/dev/null
    done
    if [ "$own" = 0 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        local holder
        holder="$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1)"
        die "port 127.0.0.1:$port is held by ${holder:-another process (run: ss -ltnp 'sport = :$port')}: stop it or set SENTINEL_PORT to a free port in $ENV_FILE"
    fi
}

if [ ! -f "$ENV_FILE" ]; then
    umask 077
    sed "s/^DB_PASSWORD=.*/DB_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')/" \
        "$ROOT/.env.template" > "$ENV_FILE"
    say "wrote $ENV_FILE (random DB_PASSWORD; edit it for webhooks and S3)"
fi
export DOCKER_GID="${DOCKER_GID:-$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)}"

# Images: use what exists or can be pulled; build locally otherwise.
POSTGRES_IMAGE="$(env_value POSTGRES_IMAGE)"; POSTGRES_IMAGE="${POSTGRES_IMAGE:-postgres:16}"
SENTINEL_IMAGE="$(env_value SENTINEL_IMAGE)"; SENTINEL_IMAGE="${SENTINEL_IMAGE:-sentinel-remedy:latest}"
have() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
if ! have "$POSTGRES_IMAGE"; then
    [ "$BUILD" = 1 ] || die "image $POSTGRES_IMAGE is missing (run without --no-build)"
    say "$POSTGRES_IMAGE is not available: building a local PostgreSQL image"
    POSTGRES_IMAGE=sentinel-remedy/postgres:15
    POSTGRES_IMAGE="$POSTGRES_IMAGE" "$ROOT/scripts/build_images.sh" postgres
fi
# The local tag is rebuilt from this checkout (a no-op when nothing changed).
if [ "$SENTINEL_IMAGE" = sentinel-remedy:local ] || ! have "$SENTINEL_IMAGE"; then
    [ "$BUILD" = 1 ] || die "image $SENTINEL_IMAGE is missing (run without --no-build)"
    say "building the daemon image"
    SENTINEL_IMAGE=sentinel-remedy:local
    SENTINEL_IMAGE="$SENTINEL_IMAGE" "$ROOT/scripts/build_images.sh" sentinel
fi
export POSTGRES_IMAGE SENTINEL_IMAGE

NETWORK="$(env_value COMPOSE_NETWORK)"; NETWORK="${NETWORK:-sentinel-remedy}"
export COMPOSE_NETWORK="$NETWORK"
if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
    docker network create "$NETWORK" >/dev/null
    say "created network $NETWORK"
fi

# The daemon refuses a registry its group or others can write (a checkout made under umask 002).
if [ "$FLEET" = 1 ]; then chmod go-w "$ROOT/compose/targets.yaml"; fi

free_port "$(env_value SENTINEL_PORT | grep . || echo 9187)"

say "starting $(basename "$COMPOSE_FILE_PATH") as project $COMPOSE_PROJECT_NAME (postgres: $POSTGRES_IMAGE, daemon: $SENTINEL_IMAGE)"
compose up -d

# Monitoring has begun once every target's first probe passed (asked through the daemon's API).
want=1
[ "$FLEET" = 1 ] && want=3
sentinel="$(compose ps -q sentinel)"
up=0
for _ in $(seq 1 120); do
    up="$(docker exec "$sentinel" sentinel-remedy status --json 2>/dev/null | grep -c '"up": true' || true)"
    [ "$up" -ge "$want" ] && break
    sleep 1
done
if [ "$up" -lt "$want" ]; then
    docker logs --tail 30 "$sentinel" >&2
    die "monitoring did not begin within 120 s: $up of $want targets up (log above)"
fi

# Anything /healthz finds wrong (an archive directory the daemon cannot write, say) is said
# now, not at the first incident.
if ! health="$(docker exec "$sentinel" sentinel-remedy healthcheck 2>&1)"; then
    die "the daemon is watching but unhealthy; fix $ENV_FILE (or the registry) and run quickstart again: $health"
fi

port="$(env_value SENTINEL_PORT)"; port="${port:-9187}"
cat <<INFO

SentinelRemedy is watching $want database(s).
  Status page:   http://127.0.0.1:$port/   (also /status, /metrics, /healthz)
  Daemon log:    ${COMPOSE_BIN[*]} -p $COMPOSE_PROJECT_NAME -f $COMPOSE_FILE_PATH logs -f sentinel
  Incidents:     docker exec $sentinel ls /var/lib/sentinel/incidents
  Chaos test:    scripts/test_system.sh$( [ "$FLEET" = 1 ] && echo " --fleet")
  Stop:          scripts/quickstart.sh$( [ "$DISCOVER" = 1 ] && echo " --discover" || { [ "$FLEET" = 1 ] && echo " --fleet"; }) --down
INFO
