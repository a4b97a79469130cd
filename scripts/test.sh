#!/usr/bin/env bash
# The whole test suite, on a fresh machine of the CI kind: installs and
# starts what the tests need, then runs format check, lints and every test.
# Usage: ./scripts/test.sh            (CI calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

log "rust toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

log "format"
cargo fmt --all -- --check

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

# ---------------------------------------------------------------- browser
# Real-browser end-to-end test of the map page (tests/browser/map.test.mjs):
# Debian's headless Chromium driven by playwright-core from npm (Playwright's
# own browser download is not used). Screenshots go to .ci/artifacts/.
log "browser: chromium"
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH
if [ ! -x "$CHROMIUM_PATH" ]; then
  sudo_=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_="sudo"; fi
  echo "$CHROMIUM_PATH missing: installing Debian's chromium (apt-get update && apt-get install chromium)"
  started=$SECONDS
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  echo "installed chromium in $((SECONDS - started)) s"
fi
# (Debian's launcher script may print a harmless shell warning on stderr.)
"$CHROMIUM_PATH" --version 2>/dev/null

log "browser: npm ci (tests/browser)"
node --version
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

log "browser: map page end to end"
cargo build -p primetime --locked
PRIMETIME_BIN="${CARGO_TARGET_DIR:-target}/debug/primetime" node tests/browser/map.test.mjs
# ------------------------------------------------------------ end browser

log "all tests passed"
