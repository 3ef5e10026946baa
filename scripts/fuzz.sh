#!/usr/bin/env bash
# Schemathesis over every endpoint of the app's own OpenAPI document (`make fuzz`).
# A scratch database on the embedded cluster, the real API process on a free port,
# one key accepted as both the internal and the dashboard key so that every route
# is reachable. Fails on any 5xx. Loopback only, bounded by FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
KEY=fuzz-key
PORT=$($BIN/python -c 'from bench.common import free_port; print(free_port())')
URL=$($BIN/python - <<'PY'
from bench.common import fresh_database
print(fresh_database("waybill_fuzz"))
PY
)
INTERNAL_API_KEY=$KEY DASHBOARD_API_KEY=$KEY STRIPE_WEBHOOK_SECRET=whsec_fuzz LOG_LEVEL=WARNING \
    DATABASE_URL="$URL" API_PORT=$PORT $BIN/waybill serve &
API=$!
trap 'kill $API 2>/dev/null || true' EXIT
$BIN/schemathesis run "http://127.0.0.1:$PORT/schema/openapi.json" \
    --wait-for-schema 30 --checks not_a_server_error --max-time "${FUZZ_SECONDS:-120}" \
    --header "Authorization: Bearer $KEY" --workers 2 --suppress-health-check all
