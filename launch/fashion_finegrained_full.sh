#!/usr/bin/env bash
# The fine-grained Fashion-MNIST study at the budget where the methods separate
# (configs/fashion_finegrained.py:full): per seed one shared task-0 model, then
# every method of METHODS from it (`python -m mfgr_jax.study`). Each finished run's
# results.json, config.json and sample grids are kept in $OUT/runs/<method>-seed<s>/
# (and committed at once with COMMIT=1), so the study survives interruptions:
# run the same command again, on any day or machine, and it skips what is kept and
# resumes what is not. Then the report $OUT/report.md with its charts.
#
#   launch/fashion_finegrained_full.sh                  (seeds 0 1 2, every method)
#   COMMIT=1 SEEDS=0 METHODS=finetune,lwf launch/fashion_finegrained_full.sh
#   EXTRA="--config.data.data_dir=/tmp/tfds" launch/fashion_finegrained_full.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/fashion_finegrained_full}
SEEDS=${SEEDS:-0,1,2}
# Cheap methods first; iCaRL (2000 exemplars) is the memory-based reference.
METHODS=${METHODS:-finetune,lwf,ewc,mas,muc_mas,lwm,icarl,lwf_g_bn,mfgr,deepinversion,abd,rdfcil}
"$PY" -m mfgr_jax.study --config=configs/fashion_finegrained.py:full --methods="$METHODS" \
  --seeds="$SEEDS" --keep="$OUT/runs" --workdirs="${ROOT:-workdirs/fashion_finegrained_full}" \
  --method_args=abd=--config.replay.single_pass=True --commit="${COMMIT:-0}" -- ${EXTRA:-}
runs=()
for method in ${METHODS//,/ }; do
  for seed in ${SEEDS//,/ }; do runs+=("$OUT/runs/$method-seed$seed"); done
done
"$PY" -m mfgr_jax.report "${runs[@]}" \
  --groups "fine-grained old=0,2,4,6" --groups "easy old=1,8" --groups "new=3,5,7,9" \
  --classes 0,2,4,6,1,8 \
  --title "Fashion-MNIST, fine-grained old classes, full budget (configs/fashion_finegrained.py:full)" \
  --out "$OUT"
