#!/usr/bin/env bash
# What container evidence costs on the Workload API: the same client binary
# measured from the host (uid, executable and namespace evidence) and inside
# a podman container (the same, plus container evidence from podman's Docker
# Engine API, cached per container), against one `hallmark up`, in one run.
#
#   scripts/bench-containers.sh [BINARY] [SECONDS]
#
# BINARY defaults to target/release/hallmark (build it first:
# `cargo build --release -p hallmark`). Needs root, podman and runc.
set -euo pipefail
bin=$(realpath "${1:-target/release/hallmark}")
secs=${2:-8}
work=$(mktemp -d /tmp/hallmark-bench-ct.XXXXXX)
tag="localhost/hallmark-bench-ct:$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    podman rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

podman --runtime runc system service --time=0 "unix://$work/podman.sock" >"$work/podman.log" 2>&1 &
pids+=($!)

# An image holding nothing but mount points: the client and the host's
# libraries are bind-mounted read-only.
root="$work/rootfs"
mkdir -p "$root"/{usr,etc,tmp,proc,sys,dev,hallmark,bin-under-test}
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
echo bench > "$root/etc/image-marker"
tar -C "$root" -cf "$work/image.tar" .
digest=$(podman import -q "$work/image.tar" "$tag")
case $digest in sha256:*) ;; *) digest="sha256:$digest" ;; esac

for _ in $(seq 50); do [ -S "$work/podman.sock" ] && break; sleep 0.2; done
"$bin" up --data-dir "$work/d" --admin-listen 127.0.0.1:0 --container-runtime-socket "$work/podman.sock" \
    >"$work/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do [ -f "$work/d/env" ] && [ "$(wc -l < "$work/d/env")" -ge 3 ] && break; sleep 0.2; done
# shellcheck disable=SC1091
source "$work/d/env"
"$bin" owner create bench --contact bench@example.org >/dev/null
exe_digest=$(sha256sum "$bin" | cut -d' ' -f1)
# The host client only (a container shares neither the host's mount nor pid namespace).
"$bin" entry create --spiffe-id spiffe://example.org/bench/host --owner bench \
    --selector "unix:uid:$(id -u)" --selector "unix:sha256:$exe_digest" --selector unix:host_ns:mnt >/dev/null
"$bin" entry create --spiffe-id spiffe://example.org/bench/container --owner bench \
    --selector "container:image_digest:$digest" --selector "unix:sha256:$exe_digest" >/dev/null

echo "## From the host: unix evidence"
"$bin" bench workload-api --socket "$SPIFFE_ENDPOINT_SOCKET" --seconds "$secs"
echo
echo "## In a podman container: unix and container evidence"
sock_dir=$(dirname "${SPIFFE_ENDPOINT_SOCKET#unix://}")
podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -v /usr:/usr:ro -v "$(dirname "$bin"):/bin-under-test:ro" -v "$sock_dir:/hallmark" "$tag" \
    "/bin-under-test/$(basename "$bin")" bench workload-api --socket unix:///hallmark/api.sock --seconds "$secs"
