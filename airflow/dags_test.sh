#!/usr/bin/env bash
# `make airflow-test`: generate the Airflow DAG for the tiny preset, check Airflow imports it without
# errors, run `airflow dags test` for one logical date end to end (every task calls the adsformer CLI),
# then check the lake: every step of that date succeeded and the evaluation and serving outputs exist.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRFLOW_VENV=${AIRFLOW_VENV:-build/airflow-venv}
DATE=${DATE:-2026-03-03}
work=$(mktemp -d -t adsformer-airflow-XXXX)
trap 'rm -rf "$work"' EXIT
export AIRFLOW_HOME="$work/home" AIRFLOW__CORE__DAGS_FOLDER="$work/dags" AIRFLOW__CORE__LOAD_EXAMPLES=false

.venv/bin/adsformer airflow-dag --root "$work/lake" --preset tiny --out "$work/dags"
"$AIRFLOW_VENV/bin/airflow" db migrate > "$work/db.log" 2>&1 || { cat "$work/db.log"; exit 1; }
errors=$("$AIRFLOW_VENV/bin/airflow" dags list-import-errors 2>/dev/null | grep -v "^No data found" | grep -c adsformer || true)
[ "$errors" = 0 ] || { "$AIRFLOW_VENV/bin/airflow" dags list-import-errors; exit 1; }
echo ">> airflow dags test adsformer_tiny $DATE (the whole tiny DAG, a few minutes)"
"$AIRFLOW_VENV/bin/airflow" dags test adsformer_tiny "$DATE" > "$work/dags_test.log" 2>&1 || true
grep -E "Marking run|state=|DagRunState" "$work/dags_test.log" | tail -3 || true
.venv/bin/python - "$work/lake" "$DATE" "$work/dags_test.log" <<'PY'
import datetime as dt, os, re, sys
from components.lake import Lake
from pipelines.config import load_config
from pipelines.dag import steps_for

root, date, log = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), sys.argv[3]
lake = Lake(root)
missing = [s.name for s in steps_for(load_config("tiny")) if not lake.complete(lake.run_dir(date, s.name))]
needed = [os.path.join(lake.run_dir(date, "evaluate"), "metrics.json"),
          os.path.join(lake.run_dir(date, "export_serving"), "ctr", "saved_model.pb"),
          os.path.join(lake.run_dir(date, "bless"), "decision.json"),
          os.path.join(lake.run_dir(date, "report"), "index.html")]
absent = [p for p in needed if not os.path.exists(p)]
if missing or absent:
    print(open(log).read()[-20000:])
    sys.exit(f"airflow-test: steps not finished for {date}: {missing}; missing outputs: {absent}")
tasks = len(re.findall(r"\[DAG TEST\] running task", open(log).read()))
print(f"airflow-test: ok: {tasks} task runs, every step of {date} succeeded, metrics.json, the serving model, the blessing decision and the report exist")
PY
