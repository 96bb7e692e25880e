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

# The lint stage: rustfmt and clippy from the toolchain's own components.
ensure_rust_lints() {
    if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
        return
    fi
    echo "== installing rustfmt and clippy"
    rustup component add rustfmt clippy
}

# A real S3-API server for the archive tests: moto's server mode. Pinned: 5.2.x answers
# CompleteMultipartUpload with a root element real S3 never sends.
MOTO_VERSION=5.0.28

# The status-page test renders the page in a real headless Chromium.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return
    fi
    echo "== installing chromium (status page test)"
    apt_install chromium fonts-dejavu-core
}

# Every Python tool the tests use, pinned, installed in one resolver run so their dependencies
# agree with each other, into a virtual environment of the project's own (never the system
# interpreter: its other tools, an installed `aws` CLI among them, keep their own versions).
# The venv lives outside the clone so CI can reuse it; it is rebuilt when the pins change.
PYTHON_TOOLS=("moto[server]==$MOTO_VERSION" "checkov==3.3.30" "python-hcl2==8.1.4" "prometheus_client==0.26.0")
SENTINEL_VENV="${SENTINEL_VENV:-/var/tmp/sentinel-remedy-venv}"
ensure_python_tools() {
    local stamp="$SENTINEL_VENV/.sentinel-tools"
    if [ "$(cat "$stamp" 2>/dev/null)" != "${PYTHON_TOOLS[*]}" ]; then
        echo "== installing the Python test tools into $SENTINEL_VENV: ${PYTHON_TOOLS[*]}"
        rm -rf "$SENTINEL_VENV"
        if ! python3 -m venv "$SENTINEL_VENV" 2>/dev/null; then
            rm -rf "$SENTINEL_VENV"
            apt_install python3-venv
            python3 -m venv "$SENTINEL_VENV"
        fi
        "$SENTINEL_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
        printf '%s' "${PYTHON_TOOLS[*]}" > "$stamp"
    fi
    # The tests find moto_server, checkov and python3 (with hcl2, prometheus_client) on PATH.
    export PATH="$SENTINEL_VENV/bin:$PATH"
}

# The Docker tests run real containers: the Engine must answer, compose must exist, and the
# local images (no registry here) are built once, from a debootstrapped Debian, or reused.
ensure_docker() {
    if ! docker info >/dev/null 2>&1; then
        echo "the Docker Engine does not answer (docker info); the container tests need it" >&2
        exit 1
    fi
    if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
        echo "== installing docker-compose"
        apt_install docker-compose
    fi
    command -v debootstrap >/dev/null 2>&1 || { echo "== installing debootstrap"; apt_install debootstrap; }
    command -v flock >/dev/null 2>&1 || apt_install util-linux
    echo "== container images (built once, then reused)"
    scripts/build_images.sh postgres etcd
}

# Cluster mode: the etcd-client crate compiles etcd's protobuf definitions with protoc.
ensure_protoc() {
    # protoc alone is not enough: etcd's protos import google/protobuf/descriptor.proto, which
    # Debian ships in libprotobuf-dev (only recommended by protobuf-compiler).
    if command -v protoc >/dev/null 2>&1 && [ -f /usr/include/google/protobuf/descriptor.proto ]; then
        return
    fi
    echo "== installing protobuf-compiler and libprotobuf-dev (protoc and its well-known protos, to build the etcd client)"
    apt_install protobuf-compiler libprotobuf-dev
}

# Cluster mode's tests run a real etcd (and etcdctl to read its keys from outside).
ensure_etcd() {
    if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
        return
    fi
    echo "== installing etcd-server and etcd-client"
    apt_install etcd-server etcd-client
    # Debian's package may start a system etcd; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl stop etcd >/dev/null 2>&1 || true
    fi
}
