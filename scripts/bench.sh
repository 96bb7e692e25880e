#!/usr/bin/env bash
# Recovery benchmark: time to detect and recover after kill -9 and an immediate stop (interval
# 1 s, threshold 3, with and without the pid watch) next to the floor of a bare restart script,
# and the daemon's memory and CPU while watching 1, 10 and 50 healthy targets.
# Also a postgres container killed and paused, with and without the Docker events fast path,
# a killed container's evidence archive (median/p95) and kill -> SELECT 1 next to the script floor,
# a hung (SIGSTOPped) server at the default probe settings and at 1 s / 1 s / 3, the probe
# cost (1,000 healthy scram-sha-256 targets probed every second, each probe a new login: the
# daemon's CPU, memory and probe lateness p50/p99, and the servers' CPU), and 50 labelled
# containers found by discovery; in cluster mode, in containers (three daemons, a 3-node etcd):
# the takeover time after a daemon's SIGKILL at TTL 5 s and 2 s (median and max of 10, with a
# database killed in the gap: SQL back, double restarts, duplicate pages) and three daemons
# watching 300 targets (CPU and memory per daemon, etcd's write rate); and the same on bare
# processes on loopback with a release build (section `cluster`).
# Knobs: BENCH_RUNS (5), BENCH_WINDOW (60 s per resource sample), BENCH_TARGETS (1,10,50),
# BENCH_DOCKER (1; 0 skips the container and discovery sections), BENCH_RECOVERY and BENCH_HANG
# (1; 0 skips the crash or the hung-server section), BENCH_PROBE_TARGETS (1000; a comma list
# gives one row each, 0 skips), BENCH_DISCOVER (50 labelled containers discovered; 0 skips),
# BENCH_ARCHIVE_MIB (4: server log in the archived container), BENCH_TAKEOVER_RUNS (10; 0
# skips), BENCH_CLUSTER_TARGETS (300; 0 skips), BENCH_CLUSTER (1; 0 skips the bare-process
# cluster section), BENCH_CLUSTER_RUNS (10), BENCH_CLUSTER_WINDOW (20 s), BENCH_TLS_TARGETS
# (50: the TLS cost rows, plain / sslmode=require / verify-full next to pgbench -C, run with
# `probe` or alone as `tls`; 0 skips), BENCH_TLS_WINDOW (20 s), BENCH_ONLY (a comma list: only
# these sections, from recovery, hang, containers, archive, floor, resources, probe, tls,
# discovery, takeover, cluster-load, cluster, cluster-scale, recorder), BENCH_SCALE_TARGETS (10000 targets
# shared by 3 daemons at BENCH_SCALE_INTERVAL, 10 s, on BENCH_SCALE_SERVERS, 3, servers, TTL
# BENCH_SCALE_TTL, 5 s: per-daemon CPU and RSS, etcd's CPU and reads per second over
# BENCH_SCALE_WINDOW, 30 s, and the takeover of one daemon's targets after SIGKILL; 0 skips),
# BENCH_FLOOR_RUNS (10: kills per way in section
# `floor`: kill → `SELECT 1` for the script floor, Docker's restart policy and the daemon, with
# the same outside poll, median and max, and where the time goes), BENCH_FLOOR_BASELINE (another
# daemon binary measured beside it in the same session), BENCH_RECORDER_TARGETS (1000: the flight
# recorder's cost, section `recorder`: the daemon's CPU and memory per target with the recorder
# off, at its default cadence and with full rings, and pgbench's cost of the identity query with
# pg_postmaster_start_time() and of the vitals query; 0 skips), BENCH_RECORDER_INTERVAL (1s: their
# probe interval; a longer one where the servers cannot take that many logins a second).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
ensure_postgres
ensure_protoc
[ "${BENCH_DOCKER:-1}" = 0 ] || { ensure_docker; ensure_etcd; }
[ "${BENCH_CLUSTER:-1}" = 0 ] || ensure_etcd
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sentinel-remedy-target}"
cargo bench --locked --bench recovery 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)'
