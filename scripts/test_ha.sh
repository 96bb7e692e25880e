#!/usr/bin/env bash
# The chaos test of the cluster-mode stack (compose/ha.yml: a 3-node etcd cluster, three
# daemons, three databases), in the style of test_system.sh: it breaks things for real and
# counts from outside the daemons (owner keys through etcdctl, Engine `start` events of the
# database containers, pages at its own webhook receiver on the host), prints the figures and
# OK/FAIL per step, and exits 1 if any step failed.
#   1. ownership   every target owned by exactly one live daemon
#   2. kill        SIGKILL the daemon owning pg1, kill pg1 in the gap: pg1 owned again within
#                  TTL + 1 s (--slack), started exactly once, one failure and one recovery page
#   3. cut-off     disconnect the daemon owning pg2 from the coord network (etcd only): the
#                  same checks for pg2; the daemon reports 503; reconnected, it rejoins
#
#   scripts/test_ha.sh [--up] [--down] [--timeout SECONDS] [--slack SECONDS]
#     --up    write compose/.env.ha if missing (random password, WEBHOOK_URL at this script's
#             receiver, CLUSTER_TTL=2s), build the local images, start the stack and wait
#     --down  remove the stack (and its volumes) at the end
#     --slack the takeover goal is TTL + this (default 1 s; more on a busy machine)
# Variables: COMPOSE_PROJECT_NAME (sentinel-ha), ENV_FILE (compose/.env.ha), HA_RECEIVER_PORT
# (18187: the receiver listens on the host on this port; the daemons reach it at
# host.docker.internal), SENTINEL_BINARY (build the daemon image from this binary).
set -euo pipefail

UP=0
DOWN=0
TIMEOUT=60
SLACK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --up) UP=1 ;;
        --down) DOWN=1 ;;
        --timeout) TIMEOUT="$2"; shift ;;
        --slack) SLACK="$2"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "test_ha: unknown argument '$1'" >&2; exit 64 ;;
    esac
    shift
done
HA=1
export HA
# shellcheck source=compose_env.sh
. "$(dirname "$0")/compose_env.sh"
PORT="${HA_RECEIVER_PORT:-18187}"
PREFIX=/sentinel-remedy

say() { printf 'test_ha: %s\n' "$*"; }
die() { printf 'test_ha: ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

docker info >/dev/null 2>&1 || die "cannot reach the Docker Engine"

# The receiver: every POST as one JSON line {at, path, body}.
PAGES="$(mktemp)"
python3 - "$PORT" "$PAGES" <<'PY' &
import http.server, json, sys, time
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"at": time.time(), "path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Hook).serve_forever()
PY
receiver=$!
cleanup() {
    kill "$receiver" 2>/dev/null || true
    rm -f "$PAGES"
    if [ "$DOWN" = 1 ]; then compose down -v --timeout 2 >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
sleep 0.5
kill -0 "$receiver" 2>/dev/null || die "the receiver could not listen on port $PORT (HA_RECEIVER_PORT)"

if [ "$UP" = 1 ]; then
    if [ ! -f "$ENV_FILE" ]; then
        umask 077
        cat >"$ENV_FILE" <<ENV
DB_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
WEBHOOK_URL=http://host.docker.internal:$PORT/hook
CLUSTER_TTL=2s
HEALTH_CHECK_INTERVAL=500ms
POSTGRES_IMAGE=sentinel-remedy/postgres:15
ETCD_IMAGE=sentinel-remedy/etcd:3.4
SENTINEL_IMAGE=sentinel-remedy:local
ENV
        say "wrote $ENV_FILE"
    fi
    export POSTGRES_IMAGE ETCD_IMAGE SENTINEL_IMAGE
    POSTGRES_IMAGE="$(env_value POSTGRES_IMAGE)" ETCD_IMAGE="$(env_value ETCD_IMAGE)" \
        SENTINEL_IMAGE="$(env_value SENTINEL_IMAGE)" "$ROOT/scripts/build_images.sh" all
    export DOCKER_GID="${DOCKER_GID:-$(stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)}"
    chmod go-w "$ROOT/compose/ha/targets.yaml"
    say "starting $(basename "$COMPOSE_FILE_PATH") as project $COMPOSE_PROJECT_NAME"
    compose up -d >/dev/null
fi
[ -f "$ENV_FILE" ] || die "no $ENV_FILE: run with --up to write one and start the stack"
case "$(env_value WEBHOOK_URL)" in
    *":$PORT/"*) ;;
    *) die "WEBHOOK_URL in $ENV_FILE is not this script's receiver (port $PORT): pages could not be counted" ;;
esac
TTL="$(env_value CLUSTER_TTL)"; TTL="${TTL:-5s}"
COORD_NET="$(env_value COORD_NETWORK)"; COORD_NET="${COORD_NET:-sentinel-ha-coord}"
TTL_S="$(awk -v t="$TTL" 'BEGIN { if (t ~ /ms$/) print substr(t, 1, length(t) - 2) / 1000; else { sub(/s$/, "", t); print t + 0 } }')"

container_of() { compose ps -q "$1" 2>/dev/null; }
DAEMONS=(sentinel-a sentinel-b sentinel-c)
for s in "${DAEMONS[@]}" pg1 pg2 pg3 etcd1; do
    [ -n "$(container_of "$s")" ] || die "service $s is not running (scripts/test_ha.sh --up starts the stack)"
done

# etcdctl: the host's (Debian's etcd-client; scripts/lib/deps.sh ensure_etcd) against the
# members' addresses on the coord network, else the one inside a running etcd container.
ENDPOINTS=""
if command -v etcdctl >/dev/null 2>&1; then
    for s in etcd1 etcd2 etcd3; do
        ip="$(docker inspect -f "{{with index .NetworkSettings.Networks \"$COORD_NET\"}}{{.IPAddress}}{{end}}" "$(container_of "$s")" 2>/dev/null || true)"
        [ -z "$ip" ] || ENDPOINTS="${ENDPOINTS:+$ENDPOINTS,}http://$ip:2379"
    done
fi
etcdctl() {
    local s c
    if [ -n "$ENDPOINTS" ] && ETCDCTL_API=3 command etcdctl --endpoints="$ENDPOINTS" --dial-timeout=1s --command-timeout=2s "$@"; then
        return 0
    fi
    for s in etcd1 etcd2 etcd3; do
        c="$(container_of "$s")"
        [ -n "$c" ] && [ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || continue
        docker exec -e ETCDCTL_API=3 "$c" etcdctl --dial-timeout=1s --command-timeout=2s "$@" && return 0
    done
    return 1
}
# "target member" lines.
owners() { etcdctl get --prefix "$PREFIX/owner/" 2>/dev/null | paste - - | sed "s|^$PREFIX/owner/||" || true; }
owner_of() { owners | awk -v t="$1" '$1 == t { print $2 }'; }
members() { etcdctl get --prefix --keys-only "$PREFIX/members/" 2>/dev/null | sed -n "s|^$PREFIX/members/||p"; }
healthy() { docker exec "$(container_of "$1")" sentinel-remedy healthcheck >/dev/null 2>&1; }
# Pages at the receiver since $1 for target $2 of kind $3.
pages() {
    python3 - "$PAGES" "$1" "$2" "$3" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    p = json.loads(line)
    b = p.get("body") or {}
    if p["at"] >= float(sys.argv[2]) and b.get("target") == sys.argv[3] and b.get("event") == sys.argv[4]:
        n += 1
print(n)
PY
}
starts_since() {
    docker events --since "$2" --until "$(now)" --filter "container=$1" --filter event=start \
        --format '{{.Time}}' | grep -c . || true
}

say "waiting for the three daemons to be healthy and to own pg1, pg2, pg3"
deadline=$(( $(date +%s) + 120 ))
until healthy sentinel-a && healthy sentinel-b && healthy sentinel-c \
    && [ "$(owners | awk '$1 ~ /^pg[123]$/' | wc -l)" -eq 3 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { owners >&2; for d in "${DAEMONS[@]}"; do docker logs --tail 10 "$(container_of "$d")" >&2; done; die "the stack did not settle within 120 s"; }
    for d in "${DAEMONS[@]}"; do
        c="$(container_of "$d")"
        if [ "$(docker inspect -f '{{.RestartCount}}' "$c")" != 0 ] || [ "$(docker inspect -f '{{.State.Status}}' "$c")" = exited ]; then
            docker logs --tail 10 "$c" >&2
            die "daemon $d exited (exit status $(docker inspect -f '{{.State.ExitCode}}' "$c")); its log is above"
        fi
    done
    sleep 1
done

# Ownership settles (daemons that started later take their share gradually): the same owners
# twice, 1.5 s apart.
prev=""
until [ -n "$prev" ] && [ "$prev" = "$(owners)" ]; do
    prev="$(owners)"
    sleep 1.5
done

FAILED=()
result() { if [ "$2" = OK ]; then printf '  %-12s OK\n' "$1"; else printf '  %-12s FAIL: %s\n' "$1" "$3"; FAILED+=("$1"); fi; }

printf '\n== ownership (TTL %s)\n' "$TTL"
owners | sed 's/^/  /'
bad=""
for t in pg1 pg2 pg3; do
    n="$(owners | awk -v t="$t" '$1 == t' | wc -l)"
    o="$(owner_of "$t")"
    if [ "$n" != 1 ] || ! members | grep -qx "$o"; then bad="$bad $t($n owner(s): $o)"; fi
done
[ -z "$bad" ] && result ownership OK || result ownership FAIL "not owned by exactly one live member:$bad"

# One chaos step: $1 name, $2 target, $3 how the owner is taken away (kill|cut).
chaos() {
    local step="$1" target="$2" how="$3" owner svc ctr db t0 took="" new="" s
    owner="$(owner_of "$target")"
    [ -n "$owner" ] || { result "$step" FAIL "$target has no owner"; return; }
    svc="$owner"
    ctr="$(container_of "$svc")"
    db="$(container_of "$target")"
    printf '\n== %s: %s owns %s; %s it, then kill %s\n' "$step" "$owner" "$target" \
        "$([ "$how" = kill ] && echo "SIGKILL" || echo "cut off etcd from")" "$target"
    t0="$(now)"
    if [ "$how" = kill ]; then
        docker kill "$ctr" >/dev/null
    else
        docker network disconnect "$COORD_NET" "$ctr" >/dev/null
    fi
    [ "$how" = cut ] || docker kill "$db" >/dev/null
    local deadline
    deadline=$(( $(date +%s) + TIMEOUT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        new="$(owner_of "$target")"
        if [ -n "$new" ] && [ "$new" != "$owner" ]; then took="$(elapsed "$t0" "$(now)")"; break; fi
        sleep 0.1
    done
    local fault="$t0"
    if [ "$how" = cut ]; then fault="$(now)"; docker kill "$db" >/dev/null; fi
    until docker exec "$db" pg_isready -q -U postgres 2>/dev/null && [ "$(pages "$fault" "$target" recovery)" -ge 1 ]; do
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.5
    done
    sleep 2  # a late second restart or page would show now
    local starts fail rec health="" unhealthy=1
    starts="$(starts_since "$db" "$fault")"
    fail="$(pages "$fault" "$target" failure)"
    rec="$(pages "$fault" "$target" recovery)"
    if [ "$how" = cut ]; then
        if health="$(docker exec "$ctr" sentinel-remedy healthcheck 2>&1)"; then unhealthy=0; fi
    fi
    printf '  takeover      %s s (new owner %s)\n' "${took:-none}" "${new:-none}"
    printf '  starts        %s Engine start(s) of %s since the fault\n' "$starts" "$target"
    printf '  pages         %s failure, %s recovery\n' "$fail" "$rec"
    [ "$how" = cut ] && printf '  cut daemon    %s\n' "$(tr '\n' ' ' <<<"${health:-healthy}" | cut -c1-160)"
    local why=""
    if [ -z "$took" ]; then why="$target was not taken over within ${TIMEOUT}s"
    elif awk -v a="$took" -v t="$TTL_S" -v s="$SLACK" 'BEGIN { exit !(a > t + s) }'; then why="takeover took $took s, over TTL + $SLACK s"
    elif [ "$unhealthy" = 0 ]; then why="the daemon cut off from etcd still reports healthy"
    elif [ "$starts" != 1 ]; then why="$starts start(s) of $target, expected 1"
    elif [ "$fail" != 1 ] || [ "$rec" != 1 ]; then why="$fail failure and $rec recovery page(s), expected 1 and 1"
    fi
    [ -z "$why" ] && result "$step" OK || result "$step" FAIL "$why"
    # Bring the daemon back.
    if [ "$how" = kill ]; then docker start "$ctr" >/dev/null; else docker network connect "$COORD_NET" "$ctr" >/dev/null; fi
    deadline=$(( $(date +%s) + TIMEOUT ))
    until healthy "$svc" && members | grep -qx "$owner"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then result "$step-rejoin" FAIL "$owner did not rejoin within ${TIMEOUT}s"; return; fi
        sleep 0.5
    done
    printf '  rejoined      %s s after the fault\n' "$(elapsed "$t0" "$(now)")"
}

chaos kill pg1 kill
chaos cut-off pg2 cut

if [ "${#FAILED[@]}" -gt 0 ]; then
    printf '\ntest_ha: FAILED: %s\n' "${FAILED[*]}" >&2
    exit 1
fi
printf '\ntest_ha: OK: every target owned once, takeovers within TTL + %s s, one restart and one page per fault\n' "$SLACK"
