#!/usr/bin/env bash
# Builds the Hallmark container image from a built binary, offline:
# stages a root file system (the binary, the shared libraries `ldd` names,
# /etc/passwd and /etc/group with the `hallmark` user, uid 65532) and runs
# `podman build` on the Containerfile beside this script (FROM scratch).
#
#   packaging/container/build.sh BINARY [TAG]    # TAG defaults to localhost/hallmark:dev
set -euo pipefail
bin=${1:?usage: build.sh BINARY [TAG]}
tag=${2:-localhost/hallmark:dev}
here=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d /tmp/hallmark-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/var/lib/hallmark"
install -m 0755 "$bin" "$root/usr/local/bin/hallmark"
# Every shared library the binary loads, at the path the dynamic loader expects.
ldd "$bin" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo 'hallmark:x:65532:65532:hallmark:/var/lib/hallmark:/nonexistent' > "$root/etc/passwd"
echo 'hallmark:x:65532:' > "$root/etc/group"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/var/lib/hallmark"
chmod 0700 "$root/var/lib/hallmark"
cp "$here/Containerfile" "$ctx/Containerfile"
podman build --quiet --format docker --tag "$tag" "$ctx" >/dev/null
echo "$tag"
