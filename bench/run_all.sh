#!/usr/bin/env bash
# `make bench`: run every bench/*_bench.py against PostgreSQL and print one JSON object with
# each benchmark's own JSON under its name. Results are also kept in var/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gaitweb_bench}"
export GAIT_DATA_DIR="${GAIT_DATA_DIR:-$PWD/var/bench}"
mkdir -p "$GAIT_DATA_DIR"
db="${DATABASE_URL##*/}"
if [[ "$DATABASE_URL" == postgres* ]]; then
  psql "${DATABASE_URL%/*}/postgres" -qtc "SELECT 1 FROM pg_database WHERE datname='${db}'" | grep -q 1 \
    || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE ${db}"
fi
"$PY" manage.py migrate -v0
only="${BENCH:-}"
results=()
for script in bench/*_bench.py; do
  name=$(basename "$script" _bench.py)
  if [[ -n "$only" && ",$only," != *",$name,"* ]]; then continue; fi
  echo "== $name" >&2
  # a benchmark prints one JSON document on stdout, compact or indented (Django's test-database
  # set-up may print a line before it)
  if out=$("$PY" "$script" 2> "$GAIT_DATA_DIR/$name.log" | "$PY" -c 'import json, sys; t = sys.stdin.read(); print(json.dumps(json.loads(t[t.index("{"):])))'); then
    echo "$out" > "$GAIT_DATA_DIR/$name.json"
    results+=("\"$name\": $out")
  else
    results+=("\"$name\": {\"error\": \"failed, see $GAIT_DATA_DIR/$name.log\"}")
  fi
done
( IFS=,; echo "{${results[*]}}" ) | "$PY" -m json.tool
