#!/usr/bin/env bash
# Runs Hallmark's whole test suite on a fresh machine: installs what the tests
# need (PostgreSQL, curl, nginx, podman, runc, fuse3, swtpm and libtss2, Python's
# venv, Node.js and npm from Debian packages; the interop clients' pinned packages from PyPI into
# .venv and from npm into tests/interop/node_modules), starts a throwaway
# PostgreSQL as the postgres user, runs every test, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
# The container image test (crates/hallmark/tests/it/container.rs) builds and
# runs the image with podman on runc (crun fails on some cgroup setups).
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
# TPM 2.0 node attestation (crates/hallmark/tests/it/tpm.rs,
# crates/hallmark-agent/tests/tpm.rs): a software TPM, and libtss2 to build
# the agent's `tpm` feature against.
command -v swtpm >/dev/null || need_apt+=(swtpm)
command -v swtpm_setup >/dev/null || need_apt+=(swtpm-tools)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists tss2-esys tss2-tctildr 2>/dev/null || need_apt+=(libtss2-dev)
ls /usr/lib/*/libtss2-tcti-swtpm.so* >/dev/null 2>&1 || need_apt+=(libtss2-tcti-swtpm0)
# Schemathesis (scripts/api-fuzz.sh) and the Python interop clients run from a virtualenv.
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3 python3-venv)
# The Node interop client (@grpc/grpc-js).
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# The hashing-bound attack test (crates/hallmark/tests/it/attacks.rs) serves
# executables from a FUSE filesystem of its own, mounted with fusermount3.
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
# The `hallmark helper` test runs its own nginx (never the system service).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start system services (nginx on port 80): unless the
    # machine already says so, say so for the length of the install.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
    if [ -n "$own_policy" ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# A throwaway PostgreSQL cluster on a private port, owned by the postgres user
# (PostgreSQL refuses to run as root).
pg_dir=$(mktemp -d /tmp/hallmark-pg.XXXXXX)
pg_port=${HALLMARK_TEST_PG_PORT:-55432}
chown postgres:postgres "$pg_dir" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
trap cleanup EXIT
log "starting PostgreSQL ($("$pg_bin/postgres" --version)) on port $pg_port"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
export HALLMARK_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"

if ! command -v cargo-nextest >/dev/null; then
    log "cargo-nextest not found; using cargo test"
    runner=(cargo test --workspace --all-targets --features hallmark/tpm)
else
    runner=(cargo nextest run --workspace --no-fail-fast --features hallmark/tpm)
fi
# Workload API clients the interop tests run (crates/hallmark/tests/it/interop.rs),
# pinned: py-spiffe and grpcio into .venv, @grpc/grpc-js into tests/interop.
# With HALLMARK_INTEROP=1 a missing client fails those tests instead of skipping them.
[ -x .venv/bin/python ] || python3 -m venv .venv
log "interop clients: pip install -r tests/interop/requirements.txt, npm ci in tests/interop"
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
if [ ! -f tests/interop/node_modules/.package-lock.json ] ||
    [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; then
    npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
fi
export HALLMARK_INTEROP=1

log "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --features hallmark/tpm --quiet -- -D warnings
log "rustdoc (a broken intra-doc link is an error)"
cargo doc --workspace --no-deps --features hallmark/tpm --quiet
log "tests: ${runner[*]}"
"${runner[@]}"

# The admin API against its OpenAPI description, with the binary the tests
# just built: schemathesis from PyPI, in a virtualenv (.venv).
log "admin API against openapi/admin.yaml (scripts/api-fuzz.sh)"
HALLMARK_BIN=target/debug/hallmark scripts/api-fuzz.sh

# Every fuzz target, briefly, from its committed seeds (a crash fails the
# suite), built unoptimized to keep a cold build short; `scripts/fuzz.sh 600`
# runs them longer, optimized.
log "fuzz targets, ${HALLMARK_FUZZ_SECONDS:-3} s each (scripts/fuzz.sh)"
HALLMARK_FUZZ_PROFILE=dev scripts/fuzz.sh "${HALLMARK_FUZZ_SECONDS:-3}"
