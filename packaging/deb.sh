#!/usr/bin/env bash
# Builds keyflip's Debian package into target/debian/ with cargo-deb (install it
# with `cargo install cargo-deb --locked`): the man pages and completions are
# generated from the binary being packaged, so they match its --help.
#
#   packaging/deb.sh                 cargo build --release --locked, then package it
#   packaging/deb.sh --debug-binary  package target/debug/keyflip as built by the
#                                    tests (CI's layout check; never ship this one)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--debug-binary" ]; then
  profile=dev
  bin=target/debug/keyflip
  [ -x "$bin" ] || { echo "packaging/deb.sh: $bin is missing; run cargo build first" >&2; exit 1; }
else
  profile=release
  bin=target/release/keyflip
  cargo build --release --locked
fi

assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" manpages "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/keyflip"
"$bin" completions zsh >"$assets/completions/_keyflip"
"$bin" completions fish >"$assets/completions/keyflip.fish"

fast=()
[ "$profile" = dev ] && fast=(--fast)
cargo deb --no-build --profile "$profile" -p keyflip --output target/debian/ --quiet "${fast[@]}"
