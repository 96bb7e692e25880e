# Shared install steps for the scripts: each checks first and installs only what is missing.

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "${SENTINEL_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        export SENTINEL_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# PostgreSQL server binaries (initdb, pg_ctl, postgres, psql): the tests start real clusters.
ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
        return
    fi
    echo "== installing PostgreSQL server binaries"
    apt_install postgresql postgresql-client
    # Debian's package starts a cluster of its own; the tests do not need it.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        for c in /etc/postgresql/*/main; do
            [ -d "$c" ] || continue
            v=$(basename "$(dirname "$c")")
            pg_ctlcluster "$v" main stop >/dev/null 2>&1 || true
        done
    fi
}

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        return
    fi
    echo "== installing cargo-nextest"
    cargo install --locked cargo-nextest
}

# A real S3-API server for the archive tests: moto's server mode. Pinned: 5.2.x answers
# CompleteMultipartUpload with a root element real S3 never sends.
MOTO_VERSION=5.0.28
ensure_moto() {
    if command -v moto_server >/dev/null 2>&1 && python3 -c "import moto,sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
        return
    fi
    echo "== installing moto[server]==$MOTO_VERSION (S3 test server)"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
}

# Static checks of terraform/ (Terraform itself is not needed): python-hcl2 and checkov.
ensure_tf_tools() {
    if command -v checkov >/dev/null 2>&1 && python3 -c "import hcl2" 2>/dev/null; then
        return
    fi
    echo "== installing checkov and python-hcl2 (Terraform static checks)"
    python3 -m pip install --quiet --disable-pip-version-check "checkov==3.3.30" "python-hcl2==8.1.4"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
}

# The status-page test renders the page in a real headless Chromium; the metrics test parses
# /metrics with the official Prometheus client's parser.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return
    fi
    echo "== installing chromium (status page test)"
    apt_install chromium fonts-dejavu-core
}

ensure_prometheus_parser() {
    if python3 -c "import prometheus_client.parser" 2>/dev/null; then
        return
    fi
    echo "== installing prometheus_client (metrics parser for the tests)"
    python3 -m pip install --quiet --disable-pip-version-check "prometheus_client==0.26.0"
}
