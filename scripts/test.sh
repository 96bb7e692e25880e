#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what the tests need (PostgreSQL server
# binaries from Debian's packages, cargo-nextest, the moto S3 server, checkov, python-hcl2,
# chromium, the Prometheus client parser, debootstrap and docker-compose, protoc and etcd),
# builds the local container images when missing, then lints (rustfmt, import circles, function length, clippy)
# and runs every test.
# Usage: scripts/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh

ensure_postgres
ensure_nextest
ensure_rust_lints
ensure_python_tools
ensure_chromium
ensure_docker
ensure_protoc
ensure_etcd

# A target dir outside the clone is reused when it exists (faster CI); it is never required.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sentinel-remedy-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== lint"
cargo fmt --check
python3 scripts/lib/modcycles.py --src src
python3 scripts/lib/fnlen.py src
cargo clippy --locked --all-targets -- -D warnings
echo "== build"
cargo build --locked --all-targets
echo "== tests"
cargo nextest run --locked --no-fail-fast "$@"
