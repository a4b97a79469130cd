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

# ------------------------------------------------------------ compose
# docker-compose.yml (the local stack) is only validated: there is no Docker
# engine on these machines to build the image or start the stack.
log "compose: docker-compose config"
if ! command -v docker-compose >/dev/null 2>&1; then
  sudo_=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_="sudo"; fi
  echo "docker-compose missing: installing Debian's docker-compose (apt-get update && apt-get install docker-compose)"
  started=$SECONDS
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  echo "installed docker-compose in $((SECONDS - started)) s"
fi
docker-compose version --short
docker-compose -f docker-compose.yml config -q
echo "docker-compose.yml is valid"
# -------------------------------------------------------- end compose

# ------------------------------------------------------------ services
# Kafka: Apache Kafka itself (jars from Maven Central, cached under
# ~/.cache/primetime; tests/kafka-broker/), a single-node KRaft broker on
# free 127.0.0.1 ports, unless PRIMETIME_TEST_KAFKA names another cluster.
# The tests fail, not skip, without one.
started_pids=()
cleanup() {
  # Each started server leads its own process group (setsid): stop the
  # group; the broker's data is a temporary directory, so it gets SIGKILL
  # if SIGTERM (a controlled shutdown) takes longer than a few seconds.
  for pid in "${started_pids[@]:-}"; do
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0
    for pid in "${started_pids[@]:-}"; do
      [ -n "$pid" ] && kill -0 -- "-$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${started_pids[@]:-}"; do
    [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [ -n "${kafka_dir:-}" ]; then rm -rf "$kafka_dir"; fi
  # The EXIT trap's own status would become the script's: keep the tests'.
  return 0
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # host port seconds
  python3 - "$@" <<'PY'
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.time() + secs
while time.time() < end:
    try:
        socket.create_connection((host, port), 0.5).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}
if [ -z "${PRIMETIME_TEST_KAFKA:-}" ]; then
  log "kafka: Apache Kafka (tests/kafka-broker)"
  java -version 2>&1 | head -n 1
  kafka_dir="$(mktemp -d)"
  started=$SECONDS
  setsid tests/kafka-broker/start.sh "$kafka_dir" >"$kafka_dir/kafka.log" 2>&1 &
  started_pids+=("$!")
  kafka_pid=$!
  # The jars are fetched first on a cold machine (minutes at most), then
  # the JVM starts in seconds.
  until [ -s "$kafka_dir/bootstrap" ]; do
    if ! kill -0 "$kafka_pid" 2>/dev/null || [ $((SECONDS - started)) -gt 600 ]; then
      cat "$kafka_dir/kafka.log"; echo "kafka did not start"; exit 1
    fi
    sleep 0.2
  done
  kafka_addr="$(cat "$kafka_dir/bootstrap")"
  if ! wait_port 127.0.0.1 "${kafka_addr##*:}" 120 || ! kill -0 "$kafka_pid" 2>/dev/null; then
    cat "$kafka_dir/kafka.log"; echo "kafka did not start"; exit 1
  fi
  echo "kafka answers on $kafka_addr after $((SECONDS - started)) s (log: $kafka_dir/kafka.log)"
  export PRIMETIME_TEST_KAFKA="$kafka_addr"
fi
echo "PRIMETIME_TEST_KAFKA=$PRIMETIME_TEST_KAFKA"

# Redis: the tests use PRIMETIME_TEST_REDIS (default redis://127.0.0.1:6379)
# and start private redis-server processes for the outage test; a Redis is
# started on 127.0.0.1:6379 when none answers there.
redis_ping() { # port
  python3 - "$1" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}
if ! command -v redis-server >/dev/null 2>&1; then
  sudo_=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_="sudo"; fi
  log "redis: installing Debian's redis-server"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if [ -z "${PRIMETIME_TEST_REDIS:-}" ]; then
  if redis_ping 6379; then
    echo "redis answers on 127.0.0.1:6379"
  else
    log "redis: starting redis-server on 127.0.0.1:6379 (nothing on disk)"
    setsid redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no \
      >/dev/null 2>&1 &
    started_pids+=("$!")
    wait_port 127.0.0.1 6379 10 || { echo "redis-server did not start"; exit 1; }
  fi
  export PRIMETIME_TEST_REDIS="redis://127.0.0.1:6379"
fi
echo "PRIMETIME_TEST_REDIS=$PRIMETIME_TEST_REDIS"
# -------------------------------------------------------- end services

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

# ---------------------------------------------------------- api fuzzing
# Schema-driven fuzzing of the HTTP API (schemathesis from PyPI) against the
# embedded service, from its own generated /openapi.json: 0 failures in
# > 1,000 generated cases (scripts/schemathesis.sh).
SCHEMATHESIS_VERSION=4.32.5
log "api: schemathesis $SCHEMATHESIS_VERSION against the embedded service"
if ! python3 -m pip show schemathesis 2>/dev/null | grep -q "^Version: $SCHEMATHESIS_VERSION$"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
fuzz_port="$(free_port)"
fuzz_log="$(mktemp)"
setsid "${CARGO_TARGET_DIR:-target}/debug/primetime" serve --http-addr "127.0.0.1:$fuzz_port" \
  --sim-speed 5 >"$fuzz_log" 2>&1 &
fuzz_pid=$!
started_pids+=("$fuzz_pid")
./scripts/schemathesis.sh "http://127.0.0.1:$fuzz_port" || { tail -n 40 "$fuzz_log"; exit 1; }
kill -TERM -- "-$fuzz_pid" 2>/dev/null || true
# ------------------------------------------------------ end api fuzzing

# ------------------------------------------------------------ first run
# The README's first command, exactly: `cargo run --release` from the
# workspace root serves prices on 127.0.0.1:8080 with the embedded default;
# wait for the scripted stadium crowd to surge its cell, then stop it.
log "first run: cargo run --release"
if python3 -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1",8080))!=0)'; then
  echo "127.0.0.1:8080 is taken: the README's first command cannot be smoke-tested"; exit 1
fi
cargo build --release --locked -p primetime
first_run_log="$(mktemp)"
setsid cargo run --release --locked >"$first_run_log" 2>&1 &
first_run_pid=$!
started_pids+=("$first_run_pid")
python3 - <<'PY' || { tail -n 40 "$first_run_log"; echo "cargo run --release did not surge the stadium cell"; exit 1; }
import json, time, urllib.request
url = "http://127.0.0.1:8080/v1/price?lat=37.7786&lng=-122.3893"
started = time.time()
end, last = started + 120, None
while time.time() < end:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            last = json.load(r)
        if last.get("priced") and last.get("multiplier", 1.0) > 1.0:
            print(f"stadium cell priced {time.time() - started:.1f} s after cargo run --release started: "
                  f"multiplier {last['multiplier']} at tick {last['tick']}, model {last['model_version']}")
            raise SystemExit(0)
    except (OSError, ValueError):
        pass
    time.sleep(1)
print("last answer:", last)
raise SystemExit(1)
PY
kill -TERM -- "-$first_run_pid" 2>/dev/null || true
# ------------------------------------------------------- end first run

# ------------------------------------------------------------ market
# The closed-loop market benchmark, short version (3 seeds, 20 measured
# minutes): checks determinism (1 vs 7 shards, 1 vs 2 threads) and the
# calibration gates, and fails when one does not hold. The full run is
# `cargo run --release -p primetime-market` (QUALITY.md).
log "market: closed-loop benchmark --short"
cargo run --release --locked -p primetime-market -- --short
# -------------------------------------------------------- end market

log "all tests passed"
