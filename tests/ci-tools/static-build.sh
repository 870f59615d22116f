#!/usr/bin/env bash
# The static (musl) Linux build the release workflow and the Dockerfile make, checked by
# tests/static_build.rs. Run by .ci/run after the suite (not by tests/run.sh: the build
# takes about six minutes on two cores). The Rust target comes through rustup.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
say() { echo "tests/ci-tools/static-build.sh: $*" >&2; }
if ! command -v musl-gcc >/dev/null; then
  say "installing musl-tools from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
TRIPLE=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
  say "adding the Rust target $TRIPLE"
  rustup target add "$TRIPLE" >/dev/null 2>&1 || { say "could not add the Rust target $TRIPLE (rustup needs the Rust distribution server)"; exit 1; }
fi
if command -v musl-gcc >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE"; then
  say "building careplane for $TRIPLE (static)"
  cargo build --locked --quiet --target "$TRIPLE" --bin careplane || { say "the $TRIPLE build failed"; exit 1; }
fi

cargo test --locked --test static_build -- --include-ignored
