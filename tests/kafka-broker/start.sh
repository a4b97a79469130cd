#!/usr/bin/env bash
# Starts Apache Kafka for the end-to-end tests: a single-node KRaft
# broker+controller on 127.0.0.1 with free ports and a fresh log dir.
#
# Usage: tests/kafka-broker/start.sh DIR
#   DIR (created if missing) gets server.properties, the log dir (DIR/data)
#   and, once the ports are chosen, DIR/bootstrap (host:port). The script
#   then *becomes* the broker (exec), so the caller starts it in the
#   background, in its own process group, waits until the port answers and
#   stops it by that PID/group. Its stdout/stderr is the broker's log.
#
# The jars come from Maven Central (pom.xml beside this file) through
# `mvn dependency:copy-dependencies`, once, into
# ${PRIMETIME_KAFKA_CACHE:-~/.cache/primetime}/kafka-<version>/libs.
# Heap: PRIMETIME_KAFKA_HEAP (default 512m).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: start.sh DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="${PRIMETIME_KAFKA_CACHE:-$HOME/.cache/primetime}/kafka-$version"
libs="$cache/libs"
if [ ! -f "$cache/complete" ]; then
  # A fetch cut short leaves no `complete` marker and is redone whole.
  started=$SECONDS
  echo "kafka $version: fetching jars from Maven Central into $libs" >&2
  rm -rf "$libs"
  mkdir -p "$cache"
  # (Maven 3.8 prints colour resets even in batch mode: stripped.)
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2
  touch "$cache/complete"
  echo "kafka $version: fetched in $((SECONDS - started)) s" >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
controller_port="$(free_port)"
while [ "$controller_port" = "$port" ]; do controller_port="$(free_port)"; done
rm -rf "$dir/data"
sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" \
  -e "s|@LOG_DIR@|$dir/data|g" "$here/server.properties" >"$dir/server.properties"

java_opts=(
  "-Xmx${PRIMETIME_KAFKA_HEAP:-512m}" "-Xms128m" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/log4j2.properties"
  "-Dkafka.logs.dir=$dir"
)
cluster_id="$(python3 -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))')"
java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
  --cluster-id "$cluster_id" --config "$dir/server.properties" --ignore-formatted >/dev/null
echo "127.0.0.1:$port" >"$dir/bootstrap"
echo "kafka $version: starting on 127.0.0.1:$port (controller $controller_port), log dir $dir/data" >&2
exec java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties"
