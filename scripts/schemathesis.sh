#!/usr/bin/env bash
# Schema-driven fuzzing of the HTTP API: schemathesis (PyPI, 4.x) generates
# requests from the service's own /openapi.json and runs every check
# (status codes, content types, response schemas, schema-valid requests
# accepted, schema-invalid ones rejected, 405 + Allow for other methods).
#
#   scripts/schemathesis.sh http://127.0.0.1:8080
#   scripts/schemathesis.sh --api-key KEY http://127.0.0.1:8080
#
# Runs against a service that is already up (e.g. `cargo run -p primetime
# -- serve`). 14 operations x 150 examples per phase and mode: well over the
# 1,000 cases the issue asks for (schemathesis prints the count). Fixed seed,
# so a run is reproducible. Exits non-zero on any failure.
#
# With API keys configured in the service ([auth] keys), pass one with
# `--api-key` (or SCHEMATHESIS_API_KEY): every request carries it as
# `Authorization: Bearer`, and the document then requires a key on every
# /v1/* operation, so schemathesis also checks that requests without it are
# refused. Give that key every scope (admin) and a rate limit above the run's
# rate (e.g. rate_per_s = 100000), or 429s take the place of answers.
set -euo pipefail

api_key="${SCHEMATHESIS_API_KEY:-}"
if [[ "${1:-}" == "--api-key" ]]; then
    api_key="${2:?--api-key needs a key}"
    shift 2
fi
url="${1:?usage: $0 [--api-key KEY] SERVICE_URL (e.g. http://127.0.0.1:8080)}"
url="${url%/}"
auth=()
if [[ -n "$api_key" ]]; then
    auth=(--header "Authorization: Bearer $api_key")
fi
examples="${SCHEMATHESIS_EXAMPLES:-150}"
seed="${SCHEMATHESIS_SEED:-14}"
# One worker: with two, the coverage phase now and then dies of a runtime
# error inside Python 3.11 ("AST constructor recursion depth mismatch":
# hypothesis parses lambda sources with `ast.parse`, which is not
# thread-safe there), which fails the run without any request at fault.
workers="${SCHEMATHESIS_WORKERS:-1}"

command -v schemathesis >/dev/null || {
    echo "schemathesis not found: pip install schemathesis" >&2
    exit 2
}

# /readyz answers 503 until the first tick (documented, but a 5xx fails the
# not_a_server_error check): wait for a ready service, at most 120 s.
for _ in $(seq 120); do
    if curl -fsS -o /dev/null "$url/readyz"; then
        break
    fi
    sleep 1
done
curl -fsS -o /dev/null "$url/readyz" || {
    echo "$url is not ready (GET /readyz)" >&2
    exit 2
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 413 is how the API rejects a batch above 1,000 locations (maxItems) and a
# body above max_body_bytes: a rejection, like 400.
# Schema-valid requests the API answers with a documented refusal no schema
# can rule out: a time outside the moving retention window (410) or after
# the newest tick (422); a quote id of the right shape that is no signed
# token (400) or has expired (409, with a fresh quote).
cat >"$work/schemathesis.toml" <<'TOML'
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "413", "422"]

[[operations]]
include-path-regex = "^/v1/(price|cells/\\{cell\\}/history)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "410", "422", "429"]

[[operations]]
include-path = "/v1/quotes/redeem"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "409", "429"]

# Operator controls: a window too far from the service's event time, an
# area with both or neither of cells and bbox, a multiplier off the 0.05
# grid (400), an id that was never issued (404). Without keys the routes
# answer only loopback peers (403 otherwise).
[[operations]]
include-path-regex = "^/v1/controls"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]
TOML

# JSON Schema cannot say `minLat <= maxLat` inside one string: the hook
# orders generated bbox corners (the schema's description states the rule,
# and the API answers 400 to inverted ones).
cat >"$work/primetime_hooks.py" <<'PY'
"""Schemathesis hooks for primetime's API (see scripts/schemathesis.sh).

`bbox` is `minLng,minLat,maxLng,maxLat`; its pattern bounds each number,
but JSON Schema cannot state that a minimum is at most its maximum. The
hook orders the corners of generated boxes that parse as four numbers, so a
schema-valid box is a valid box. Strings that do not parse are left as they
are (they test the rejection of schema-invalid input).
"""

import schemathesis


@schemathesis.hook
def map_query(context, query):
    if not query:
        return query
    if not isinstance(query.get("bbox"), str):
        return query
    parts = query["bbox"].split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return query
    if len(numbers) != 4:
        return query
    min_lng, min_lat, max_lng, max_lat = parts
    if numbers[0] > numbers[2]:
        min_lng, max_lng = max_lng, min_lng
    if numbers[1] > numbers[3]:
        min_lat, max_lat = max_lat, min_lat
    query["bbox"] = ",".join([min_lng, min_lat, max_lng, max_lat])
    return query

PY

cd "$work"
PYTHONPATH="$work" SCHEMATHESIS_HOOKS=primetime_hooks \
    schemathesis --config-file "$work/schemathesis.toml" run "$url/openapi.json" \
    --checks all \
    --max-examples "$examples" \
    --seed "$seed" \
    --generation-database none \
    --no-color \
    --workers "$workers" \
    --request-timeout 10 \
    "${auth[@]}"
