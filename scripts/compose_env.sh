# Shared by quickstart.sh and test_system.sh (sourced, not run): which compose command to use,
# which file, and the stack's .env.
#   FLEET=1 selects compose/fleet.yml (three postgres containers), DISCOVER=1 compose/discover.yml
#   (three labelled ones, no registry), HA=1 compose/ha.yml (three daemons sharing the fleet
#   through etcd; its .env is .env.ha), else compose/docker-compose.yml.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_DIR="$ROOT/compose"
if [ "${HA:-0}" = 1 ]; then
    COMPOSE_FILE_PATH="$COMPOSE_DIR/ha.yml"
    : "${COMPOSE_PROJECT_NAME:=sentinel-ha}"
    : "${ENV_FILE:=$COMPOSE_DIR/.env.ha}"
elif [ "${DISCOVER:-0}" = 1 ]; then
    COMPOSE_FILE_PATH="$COMPOSE_DIR/discover.yml"
    : "${COMPOSE_PROJECT_NAME:=sentinel-discover}"
elif [ "${FLEET:-0}" = 1 ]; then
    COMPOSE_FILE_PATH="$COMPOSE_DIR/fleet.yml"
    : "${COMPOSE_PROJECT_NAME:=sentinel-fleet}"
else
    COMPOSE_FILE_PATH="$COMPOSE_DIR/docker-compose.yml"
    : "${COMPOSE_PROJECT_NAME:=sentinel-remedy}"
fi
export COMPOSE_PROJECT_NAME
# The .env of the stack (made by quickstart.sh from .env.template); ENV_FILE overrides.
: "${ENV_FILE:=$COMPOSE_DIR/.env}"

# `docker compose` (v2 plugin) when present, else `docker-compose` (v1).
if docker compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_BIN=(docker-compose)
else
    echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi

compose() {
    "${COMPOSE_BIN[@]}" --project-name "$COMPOSE_PROJECT_NAME" --env-file "$ENV_FILE" \
        -f "$COMPOSE_FILE_PATH" "$@"
}

# Reads KEY from the .env file (the environment wins, as compose does).
env_value() {
    local key="$1" v
    v="${!key:-}"
    if [ -z "$v" ] && [ -f "$ENV_FILE" ]; then
        v="$(grep -E "^$key=" "$ENV_FILE" | tail -n1 | cut -d= -f2-)"
    fi
    printf '%s' "$v"
}
