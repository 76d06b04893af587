#!/usr/bin/env bash
# What ABD's and R-DFCIL's own generator behaviour changes on the fine-grained study's
# full budget (docs/methods.md, "Every setting against the official code"): each method
# with the defaults and with its code's generator, seed 0 (or SEEDS), every run from the
# seed's kept task-0 model (the full-budget study's, copied into each variant's runs).
#   defaults:        abd (one pass over real and generated images, as in every study) and rdfcil
#   code_generator:  abd with one warm-started generator and Adam at 1e-3, sampled with
#                    running statistics; rdfcil sampled with running statistics
# Each finished run is kept and committed in $OUT/runs/<variant>/<method>-seed<s>/ as it
# ends (`python -m mfgr_jax.study`), so the same command resumes; then $OUT/report.md.
#
#   launch/official_code_options.sh [SEEDS...]        (seed 0 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/official_code_options}
SEEDS=$(echo ${*:-${SEEDS:-0}} | tr ' ' ',')
CONFIG=configs/fashion_finegrained.py:full
declare -A ARGS=(
  [defaults]="--method_args=abd=--config.replay.single_pass=True"
  [code_generator]="--method_args=abd=--config.replay.single_pass=True
    --method_args=abd=--config.generator.warm_start=True
    --method_args=abd=--config.generator.sample_statistics=running
    --method_args=abd=--config.generator.learning_rate=0.001
    --method_args=rdfcil=--config.generator.sample_statistics=running")
runs=()
for variant in defaults code_generator; do
  for seed in ${SEEDS//,/ }; do  # every variant of a seed starts from one task-0 model
    kept=docs/fashion_finegrained_full/runs/task0-seed$seed
    if [[ -d $kept && ! -d $OUT/runs/$variant/task0-seed$seed ]]; then
      mkdir -p "$OUT/runs/$variant" && cp -r "$kept" "$OUT/runs/$variant/"
    fi
  done
  # shellcheck disable=SC2086
  "$PY" -m mfgr_jax.study --config="$CONFIG" --methods=abd,rdfcil --seeds="$SEEDS" \
    --keep="$OUT/runs/$variant" --workdirs="${ROOT:-workdirs/official_code_options}/$variant" \
    --commit="${COMMIT:-1}" ${ARGS[$variant]} -- ${EXTRA:-}
  for run in "$OUT/runs/$variant"/{abd,rdfcil}-seed*; do
    [[ -f $run/results.json ]] && runs+=("$run")
  done
done
"$PY" -m mfgr_jax.report "${runs[@]}" \
  --groups "fine-grained old=0,2,4,6" --groups "easy old=1,8" --groups "new=3,5,7,9" \
  --classes 6,7,8,1,0,2,4 \
  --title "ABD and R-DFCIL with their official code's generator ($CONFIG)" --out "$OUT"
