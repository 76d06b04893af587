#!/usr/bin/env bash
# The fine-grained Fashion-MNIST study (configs/fashion_finegrained.py): per seed,
# one shared task-0 model, then every method of METHODS from it; then
# the report docs/fashion_finegrained/report.md (tables and charts). Rerunning resumes
# or skips finished runs.
#
#   launch/fashion_finegrained.sh [SEEDS...]     (default: 0 1 2)
#   EXTRA="--config.data.data_dir=/tmp/tfds" launch/fashion_finegrained.sh
#   METHODS="lwf lwm" OUT=docs/some_report launch/fashion_finegrained.sh   (a subset)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${ROOT:-workdirs/fashion_finegrained}
METHODS=${METHODS:-finetune lwf ewc mas muc_mas lwm muc_lwf icarl lwf_g_bn mfgr deepinversion icarl_mfgr abd rdfcil}
# Per-method arguments: ABD's code makes one pass over real and generated images.
declare -A METHOD_ARGS=([abd]="--config.replay.single_pass=True")
SEEDS=${*:-0 1 2}
CONFIG=configs/fashion_finegrained.py
OUT=${OUT:-docs/fashion_finegrained}

for seed in $SEEDS; do
  run() {  # run WORKDIR ARGS...: skipped when its results cover every task asked for
    local workdir=$1; shift
    "$PY" -m mfgr_jax.main --config "$CONFIG" --workdir "$workdir" --config.seed="$seed" \
      ${EXTRA:-} "$@" 2>&1 | grep -E "mfgr_jax|After task|Resuming" || true
    test -f "$workdir/results.json"
  }
  run "$ROOT/seed$seed/task0" --config.method=finetune --config.scenario.num_tasks=1
  for method in $METHODS; do
    run "$ROOT/seed$seed/$method" --config.method="$method" ${METHOD_ARGS[$method]:-} \
      --config.init_from="$ROOT/seed$seed/task0"
  done
done
runs=()
for seed in $SEEDS; do for method in $METHODS; do runs+=("$ROOT/seed$seed/$method"); done; done
"$PY" -m mfgr_jax.report "${runs[@]}" \
  --groups "fine-grained old=0,2,4,6" --groups "easy old=1,8" --groups "new=3,5,7,9" \
  --classes 0,2,4,6,1,8 \
  --title "Fashion-MNIST, fine-grained old classes (configs/fashion_finegrained.py)" \
  --out "$OUT"
