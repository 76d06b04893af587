#!/usr/bin/env bash
# The fine-grained Fashion-MNIST study (configs/fashion_finegrained.py): per seed one
# shared task-0 model, then every method of METHODS from it (`python -m mfgr_jax.study`);
# then the report $OUT/report.md with its charts. Each finished run's results.json,
# config.json and sample grids are kept in $OUT/runs/<method>-seed<s>/ (task 0's with its
# model, in task0-seed<s>/; committed at once with COMMIT=1), so the study survives
# interruptions: the same command, on any day or machine, skips what is kept and resumes
# the rest from the kept task-0 models.
#
#   launch/fashion_finegrained.sh [SEEDS...]       issue 3's budget (seeds 0 1 2 by default)
#   BUDGET=full COMMIT=1 launch/fashion_finegrained.sh
#       the budget where the methods separate (configs/fashion_finegrained.py:full)
#   METHODS="lwf lwm" OUT=docs/some_report launch/fashion_finegrained.sh   (a subset)
#   EXTRA="--config.data.data_dir=/tmp/tfds" launch/fashion_finegrained.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
case "${BUDGET:-quick}" in
  quick) CONFIG=configs/fashion_finegrained.py NAME=fashion_finegrained
         ALL="finetune lwf ewc mas muc_mas lwm muc_lwf icarl lwf_g_bn mfgr deepinversion"
         ALL="$ALL icarl_mfgr abd rdfcil"
         TITLE="Fashion-MNIST, fine-grained old classes (configs/fashion_finegrained.py)" ;;
  full) CONFIG=configs/fashion_finegrained.py:full NAME=fashion_finegrained_full
        # Cheap methods first; iCaRL (2000 exemplars) is the memory-based reference; g_bn
        # (no distillation on real images) asks whether kd_real is what loses Sneaker.
        ALL="finetune lwf ewc mas muc_mas lwm icarl lwf_g_bn g_bn mfgr deepinversion abd rdfcil"
        TITLE="Fashion-MNIST, fine-grained old classes, full budget ($CONFIG)" ;;
  *) echo "launch/fashion_finegrained.sh: BUDGET=$BUDGET is not quick or full" >&2; exit 2 ;;
esac
ROOT=${ROOT:-workdirs/$NAME}
OUT=${OUT:-docs/$NAME}
SEEDS=$(echo ${*:-${SEEDS:-0 1 2}} | tr ' ' ',')
METHODS=$(echo ${METHODS:-$ALL} | tr ' ' ',')
"$PY" -m mfgr_jax.study --config="$CONFIG" --methods="$METHODS" --seeds="$SEEDS" \
  --keep="$OUT/runs" --workdirs="$ROOT" --commit="${COMMIT:-0}" \
  --method_args=abd=--config.replay.single_pass=True -- ${EXTRA:-}
# The report covers every kept run of this budget, not only this command's METHODS and
# SEEDS, so running a subset does not shrink it.
runs=()
for method in $ALL ${METHODS//,/ }; do
  for run in "$OUT/runs/$method"-seed*; do
    [[ -f $run/results.json && " ${runs[*]} " != *" $run "* ]] && runs+=("$run")
  done
done
"$PY" -m mfgr_jax.report "${runs[@]}" \
  --groups "fine-grained old=0,2,4,6" --groups "easy old=1,8" --groups "new=3,5,7,9" \
  --classes 0,2,4,6,1,8 --confusion 1,6,7,8 --title "$TITLE" --out "$OUT"
