#!/usr/bin/env bash
# Smoke test of docker-compose.yml, for a machine with Docker (the project's CI has none).
#
#   deploy/smoke.sh            build, start, check, tear down (volumes included)
#   KEEP=1 deploy/smoke.sh     leave the stack running afterwards
#
# 1. builds the image and starts every service, waiting until each health check passes;
# 2. runs `feedbackloop doctor --running` in the worker: Kafka, topics, groups, ClickHouse server
#    version, SQL features, migrations, permissions;
# 3. posts an interaction to the collector and waits for it in ClickHouse (collector -> Kafka ->
#    worker -> ClickHouse server);
# 4. runs `feedbackloop demo` in a container of the image against the stack's Kafka and ClickHouse
#    server, and checks the regeneration rates it produced against the demo's known ground truth;
# 5. asks Grafana whether its provisioned ClickHouse datasource works and the dashboard is there.
#
# It uses the compose project "feedbackloop-smoke" (its own volumes) but the same host ports as
# `docker compose up` (127.0.0.1:9092, 8123, 8080, 3000): stop anything else on them first.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${PROJECT:-feedbackloop-smoke}
compose() { docker compose -p "$PROJECT" "$@"; }
say() { printf '\n== %s\n' "$*"; }
fail() { printf 'SMOKE FAILED: %s\n' "$*" >&2; compose logs --tail 80 >&2 || true; exit 1; }
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    echo "KEEP=1: the stack keeps running (docker compose -p $PROJECT down -v to remove it)"
  else
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# The demo's seeded workload (6,000 interactions of 300 users, seed 2, and before them ten weeks of
# history on the versions before v1.0): the rates every correct pipeline produces from it, computed
# independently by tests/support/oracle.py. A unit test (tests/unit/test_compose.py) keeps these
# lines equal to that ground truth.
EXPECTED_RATES=$'v0.8\t1044\t469
v0.9\t1502\t563
v0.9-short\t139\t61
v0.9.1\t549\t192
v1.0\t4996\t1740
v1.1\t1004\t178'

sql() {
  compose exec -T clickhouse clickhouse-client --user feedbackloop --password feedbackloop --query "$1"
}

say "building and starting the stack (waits for every health check)"
started=$(date +%s)
compose up -d --build --wait --wait-timeout 600 || fail "the stack did not become healthy"
echo "healthy after $(( $(date +%s) - started )) s"
compose ps

say "feedbackloop doctor --running (in the worker)"
compose exec -T -e COLUMNS=160 worker feedbackloop doctor --running || fail "doctor found a problem"

say "one interaction through the collector"
id=$(python3 -c 'import uuid; print(uuid.uuid4())')
curl -fsS -X POST http://127.0.0.1:8080/v1/events \
  -H 'Authorization: Bearer change-me-local-ingest-token' -H 'Content-Type: application/json' \
  -d "{\"type\": \"interaction\", \"interaction_id\": \"$id\", \"user_id\": \"smoke\", \"session_id\": \"smoke\",
       \"prompt\": \"hello\", \"prompt_version\": \"smoke\", \"model\": \"none\", \"response\": \"hi\",
       \"response_time_ms\": 1}" || fail "the collector refused the event"
echo
for _ in $(seq 60); do
  found=$(sql "SELECT count() FROM feedbackloop.ai_interactions WHERE interaction_id = '$id'")
  [ "$found" = 1 ] && break
  sleep 2
done
[ "$found" = 1 ] || fail "the interaction did not reach ClickHouse within 120 s"
echo "in ClickHouse: interaction $id"

say "feedbackloop demo against the stack (its own topics, consumer groups and database 'demo')"
compose run --rm -T --no-deps -e COLUMNS=100 --entrypoint feedbackloop worker demo \
  || fail "the demo failed"

say "checking the demo's regeneration rates against the ground truth"
got=$(sql "SELECT prompt_version, total_interactions, regenerations FROM demo.regeneration_rates
           ORDER BY prompt_version FORMAT TSV")
if [ "$got" != "$EXPECTED_RATES" ]; then
  printf 'expected:\n%s\ngot:\n%s\n' "$EXPECTED_RATES" "$got" >&2
  fail "the rates differ from the ground truth"
fi
printf '%s\n' "$got"

say "Grafana: the provisioned datasource answers, the dashboard is there"
curl -fsS -u admin:change-me http://127.0.0.1:3000/api/datasources/uid/feedbackloop-clickhouse/health \
  | grep -q '"status":"OK"' || fail "Grafana's ClickHouse datasource does not work"
curl -fsS -u admin:change-me 'http://127.0.0.1:3000/api/search?query=' \
  | grep -q 'feedbackloop-leading-indicators' || fail "the dashboard was not provisioned"
echo "datasource OK, dashboard provisioned"

say "smoke test passed in $(( $(date +%s) - started )) s"
