#!/usr/bin/env bash
# Builds keyflip's OCI image with podman, from scratch (no base image is pulled):
# the context is the binary, the shared libraries `ldd` names, the CA certificates
# and /tmp, assembled in target/oci/. Prints the image name.
#
#   packaging/oci.sh                 cargo build --release --locked, image keyflip:VERSION
#   packaging/oci.sh --debug-binary  target/debug/keyflip as the tests built it,
#                                    image keyflip:test (CI's check; never ship it)
#
# PODMAN_ARGS (for example `--root DIR --runroot DIR --storage-driver vfs`) is passed
# to every podman call, so a test can keep its images out of the machine's store.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--debug-binary" ]; then
  bin=target/debug/keyflip
  tag=keyflip:test
  [ -x "$bin" ] || { echo "packaging/oci.sh: $bin is missing; run cargo build first" >&2; exit 1; }
else
  cargo build --release --locked
  bin=target/release/keyflip
  tag=keyflip:$("$bin" version --output json | sed -n 's/^  "package_version": "\(.*\)",$/\1/p')
fi
command -v podman >/dev/null || { echo "packaging/oci.sh: podman is not installed (apt-get install podman runc)" >&2; exit 1; }

ctx=target/oci
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc/ssl/certs"
chmod 1777 "$ctx/rootfs/tmp"
cp packaging/oci/Containerfile "$ctx/"
install -m 0755 "$bin" "$ctx/rootfs/usr/bin/keyflip"
strip "$ctx/rootfs/usr/bin/keyflip" 2>/dev/null || true
# Every shared object the binary needs, at the path the loader looks for it.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
# A passwd entry for the image's user, so tools that look it up find one.
mkdir -p "$ctx/rootfs/etc"
echo 'keyflip:x:65532:65532:keyflip:/tmp:/nonexistent' >"$ctx/rootfs/etc/passwd"
echo 'keyflip:x:65532:' >"$ctx/rootfs/etc/group"

# shellcheck disable=SC2086
podman ${PODMAN_ARGS:-} build --quiet -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$tag"
