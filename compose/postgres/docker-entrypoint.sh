#!/bin/sh
# The subset of the official postgres image's entrypoint that compose files rely on: initialise
# PGDATA on first start from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, accept password
# connections from the network, then exec the server as the postgres user.
set -eu

if [ "${1:-}" != postgres ] && [ "${1#-}" = "${1:-}" ]; then
    exec "$@"
fi
[ "${1:-}" = postgres ] || set -- postgres "$@"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the server accepts password logins only)}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
        createdb -U "$user" "$db"
        pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    fi
    echo "entrypoint: initialised $PGDATA (user $user, database $db)"
fi

exec "$@"
