#!/usr/bin/env bash
# The stage-swap study (docs/results.md, "Stage I or stage II?"): MFGR's and ABD's stage I
# and stage II in all four combinations, at the fine-grained study's full budget, each
# seed's four runs from that seed's kept task-0 model (docs/stage_swap/runs/task0-seed<s>,
# the full-budget study's). The two composed methods are a plugin outside the library
# (examples/mfgr_examples/stage_swap.py), installed first. Each finished run is kept and
# committed in $OUT/runs/<method>-seed<s>/ as it ends (`python -m mfgr_jax.study`), so the
# same command resumes the study on any day or machine; then the report $OUT/report.md.
#
#   launch/stage_swap.sh [SEEDS...]        (seeds 0 1 2 by default)
#   METHODS="mfgr abd" launch/stage_swap.sh 0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/stage_swap}
ALL="mfgr mfgr_generator_abd_replay abd_generator_mfgr_replay abd"
"$PY" -m pip install -qq --no-deps -e examples
SEEDS=$(echo ${*:-${SEEDS:-0 1 2}} | tr ' ' ',')
METHODS=$(echo ${METHODS:-$ALL} | tr ' ' ',')
# ABD's stage II sees real and generated images in one pass, as in its code (and as
# the full-budget study ran `abd`).
"$PY" -m mfgr_jax.study --config=configs/fashion_finegrained.py:full --methods="$METHODS" \
  --seeds="$SEEDS" --keep="$OUT/runs" --workdirs="${ROOT:-workdirs/stage_swap}" \
  --commit="${COMMIT:-1}" --method_args=abd=--config.replay.single_pass=True \
  --method_args=mfgr_generator_abd_replay=--config.replay.single_pass=True -- ${EXTRA:-}
runs=()
for method in $ALL; do
  for run in "$OUT/runs/$method"-seed*; do
    [[ -f $run/results.json ]] && runs+=("$run")
  done
done
"$PY" -m mfgr_jax.report "${runs[@]}" \
  --groups "fine-grained old=0,2,4,6" --groups "easy old=1,8" --groups "new=3,5,7,9" \
  --classes 6,7,8,1,0,2,4 --confusion 1,6,7,8 \
  --title "Stage I or stage II? MFGR's and ABD's stages swapped (configs/fashion_finegrained.py:full)" \
  --out "$OUT"
