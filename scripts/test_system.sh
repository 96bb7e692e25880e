#!/usr/bin/env bash
# The chaos test of a running stack (scripts/quickstart.sh starts one): breaks a database
# container for real, follows the sidecar's log, and exits 0 only once it has seen detection,
# the archive, the alert, the restart and the recovery notice, printing the timeline. Only
# records logged after its own fault count (runs back to back never judge an earlier
# incident). On a missing step it exits 1 and names it; a failed archive, a spent restart
# budget or an alert sent to no channel fail it at once, naming the cause and the fix.
#
#   scripts/test_system.sh [--fault kill|stop|pause] [--timeout SECONDS]
#   scripts/test_system.sh --fleet      kill pg1, stop pg2, pause pg3 (one after the other);
#                                       also checks that the other targets saw nothing. Checks
#                                       the fleet stack, or the discovered one (quickstart.sh
#                                       --discover) when that is the one running
set -euo pipefail

FLEET=0
FAULT=kill
TIMEOUT=120
while [ $# -gt 0 ]; do
    case "$1" in
        --fleet) FLEET=1 ;;
        --fault) FAULT="$2"; shift ;;
        --timeout) TIMEOUT="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "test_system: unknown argument '$1'" >&2; exit 64 ;;
    esac
    shift
done
case "$FAULT" in kill|stop|pause) ;; *) echo "test_system: --fault is kill, stop or pause" >&2; exit 64 ;; esac
# --fleet: the stack quickstart.sh --discover started, if that is the one running (compose
# records its file in a label).
if [ "$FLEET" = 1 ] && [ -z "${DISCOVER:-}" ]; then
    for project in ${COMPOSE_PROJECT_NAME:-sentinel-fleet sentinel-discover}; do
        files="$(docker ps --filter "label=com.docker.compose.project=$project" \
            --filter label=com.docker.compose.service=sentinel \
            --format '{{.Label "com.docker.compose.project.config_files"}}' 2>/dev/null || true)"
        [ -n "$files" ] || continue
        case "$files" in *discover.yml*) DISCOVER=1; COMPOSE_PROJECT_NAME="$project"; export COMPOSE_PROJECT_NAME ;; esac
        break
    done
fi
export FLEET DISCOVER
# shellcheck source=compose_env.sh
. "$(dirname "$0")/compose_env.sh"

sentinel="$(compose ps -q sentinel 2>/dev/null || true)"
[ -n "$sentinel" ] || { echo "test_system: the stack is not running (scripts/quickstart.sh$( [ "$FLEET" = 1 ] && echo " --fleet") starts it)" >&2; exit 1; }

now_ms() { date +%s%3N; }
# Milliseconds since the epoch of a log record's "ts".
ts_ms() { date -d "$(sed -E 's/.*"ts":"([^"]+)".*/\1/' <<<"$1")" +%s%3N; }

LOG="$(mktemp)"
START_MS="$(now_ms)"
trap 'kill "$follower" 2>/dev/null || true; rm -f "$LOG"' EXIT
docker logs -f --since "$(date -u +%Y-%m-%dT%H:%M:%S)" "$sentinel" >"$LOG" 2>&1 &
follower=$!
sleep 1

# The first record of `event` for `target` (and containing `extra`, if given) logged at or
# after `since` (ms since the epoch): only the incident this run caused counts.
find_event() {
    local target="$1" event="$2" extra="${3:-}" since="${4:-0}" line
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        if [ "$(ts_ms "$line")" -ge "$since" ]; then
            printf '%s\n' "$line"
            return 0
        fi
    done < <(grep -F "\"event\":\"$event\"" "$LOG" | grep -F "\"target\":\"$target\"" | grep -F -- "$extra" || true)
}

# A string or number field of a JSON log record.
field() {
    local v
    v="$(sed -nE "s/.*\"$2\":\"((\\\\.|[^\"\\\\])*)\".*/\\1/p" <<<"$1")"
    [ -n "$v" ] || v="$(sed -nE "s/.*\"$2\":([0-9.]+).*/\\1/p" <<<"$1")"
    printf '%s' "$v"
}

# Why this incident cannot succeed, if the log already says so: a failed archive, a spent
# restart budget, an alert queued to no channel. Prints the cause and the fix.
fatal_cause() {
    local target="$1" since="$2" line
    line="$(find_event "$target" archive_failed "" "$since")"
    if [ -n "$line" ]; then
        echo "the forensic archive FAILED: $(field "$line" error). Give the daemon's user write access to ARCHIVE_DIR (or point ARCHIVE_DIR at its volume, /var/lib/sentinel/incidents) in $ENV_FILE, then: ${COMPOSE_BIN[*]} -p $COMPOSE_PROJECT_NAME -f $COMPOSE_FILE_PATH up -d"
        return 0
    fi
    line="$(find_event "$target" budget_exhausted "" "$since")"
    if [ -n "$line" ]; then
        echo "the restart budget is spent ($(field "$line" max_restarts) restarts in $(field "$line" window), earlier runs of this test included), so the daemon escalates instead of restarting (restart_budget_exhausted). Wait for the window to pass, raise MAX_RESTARTS / RESTART_WINDOW in $ENV_FILE and run ${COMPOSE_BIN[*]} -p $COMPOSE_PROJECT_NAME -f $COMPOSE_FILE_PATH up -d, or start afresh: ... down -v, then scripts/quickstart.sh. Restart the database by hand meanwhile: docker start ${4:-its container}"
        return 0
    fi
    line="$(find_event "$target" notice_queued '"channels":0' "$since")"
    if [ -n "$line" ]; then
        echo "the alert was queued to zero channels: nobody would hear of the incident. Set NOTIFY_CONSOLE=true, or SLACK_WEBHOOK_URL / DISCORD_WEBHOOK_URL / WEBHOOK_URL, in $ENV_FILE, then: ${COMPOSE_BIN[*]} -p $COMPOSE_PROJECT_NAME -f $COMPOSE_FILE_PATH up -d"
        return 0
    fi
    return 1
}

# The log from the first JSON record at or after `since` (ms) on; console lines that follow it
# come along.
after() {
    local since="$1" n=0 line
    while IFS= read -r line; do
        n=$((n + 1))
        case "$line" in
            *'"ts":"'*) if [ "$(ts_ms "$line")" -ge "$since" ]; then tail -n "+$n" "$LOG"; return 0; fi ;;
        esac
    done <"$LOG"
}

# Breaks one service's container and follows the target through the five steps.
chaos() {
    local target="$1" service="$2" fault="$3"
    local container t0 line missing=()
    container="$(compose ps -q "$service")"
    [ -n "$container" ] || { echo "test_system: no container for service $service" >&2; return 1; }
    printf '\n== %s: %s the %s container (%s)\n' "$target" "$fault" "$service" "${container:0:12}"
    t0="$(now_ms)"
    if [ "$fault" = pause ] && [ "$(docker inspect -f '{{.State.Paused}}' "$container")" = true ]; then
        echo "test_system: the $service container is already paused (an earlier run?): docker unpause $container" >&2
        return 1
    fi
    case "$fault" in
        kill) docker kill "$container" >/dev/null ;;
        stop) docker stop -t 10 "$container" >/dev/null ;;
        pause) docker pause "$container" >/dev/null ;;
    esac
    local steps=(detection archive alert restart recovery_notice)
    # Each step is the first log record of an event (and containing a marker) for the target.
    declare -A event=([detection]=incident_declared [archive]=archive_written
        [alert]=notice_queued [restart]=heal_attempt [recovery_notice]=notice_queued)
    declare -A marker=([alert]='"kind":"failure"' [restart]='heal attempt succeeded'
        [recovery_notice]='"kind":"recovery"')
    declare -A at=()
    local deadline=$(( $(date +%s) + TIMEOUT )) s cause=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        for s in "${steps[@]}"; do
            [ -z "${at[$s]:-}" ] || continue
            line="$(find_event "$target" "${event[$s]}" "${marker[$s]:-}" "$t0")"
            [ -z "$line" ] || at[$s]="$(ts_ms "$line")"
        done
        [ "${#at[@]}" -eq "${#steps[@]}" ] && break
        if cause="$(fatal_cause "$target" "$t0" "" "${container:0:12}")"; then
            break
        fi
        cause=""
        sleep 0.5
    done
    for s in "${steps[@]}"; do
        if [ -n "${at[$s]:-}" ]; then
            printf '  %-16s +%7.3f s\n' "$s" "$(awk -v a="${at[$s]}" -v b="$t0" 'BEGIN { printf "%.3f", (a - b) / 1000 }')"
        else
            printf '  %-16s MISSING\n' "$s"
            missing+=("$s")
        fi
    done
    if [ -n "$cause" ]; then
        echo "test_system: FAILED for $target: $cause" >&2
        return 1
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "test_system: FAILED for $target: no ${missing[*]} within ${TIMEOUT}s; the sidecar's log:" >&2
        tail -n 40 "$LOG" >&2
        return 1
    fi
    # Alerts delivered (or printed): a failure and a recovery reached a channel.
    local sent
    sent="$(after "$t0" | grep -F "\"target\":\"$target\"" | grep -cF '"event":"notification_sent"' || true)"
    local printed
    printed="$(after "$t0" | grep -cE "(🔴|🟢) $target (failed|recovered)" || true)"
    printf '  notifications    %s delivered to webhooks, %s printed to the log\n' "$sent" "$printed"
    if [ $(( sent + printed )) -lt 2 ]; then
        echo "test_system: FAILED for $target: the alert and the recovery notice reached no channel" >&2
        return 1
    fi
}

if [ "$FLEET" = 1 ]; then
    chaos pg1 pg1 kill
    chaos pg2 pg2 stop
    chaos pg3 pg3 pause
    # Each target had exactly one incident and one restart: the others saw nothing.
    for t in pg1 pg2 pg3; do
        n="$(after "$START_MS" | grep -F '"event":"incident_declared"' | grep -cF "\"target\":\"$t\"" || true)"
        r="$(after "$START_MS" | grep -F '"event":"heal_issued"' | grep -cF "\"target\":\"$t\"" || true)"
        if [ "$n" != 1 ] || [ "$r" != 1 ]; then
            echo "test_system: FAILED: $t had $n incident(s) and $r restart(s), expected 1 and 1" >&2
            exit 1
        fi
    done
    printf '\ntest_system: OK: three faults, three incidents, three restarts, no cross-talk\n'
else
    target="$(env_value TARGET_NAME)"
    chaos "${target:-postgres}" postgres "$FAULT"
    printf '\ntest_system: OK\n'
fi
