#!/usr/bin/env bash
# Runs mfgr_jax on all GPUs of one host: one process, data parallel over the
# local devices (the global batch and the learning rate do not change with the
# device count; every batch size must divide by it).
#
#   launch/multi_gpu.sh --config configs/cifar100_5phase.py --config.method=mfgr
#
# Needs the CUDA build of jax: pip install -r requirements.txt "jax[cuda12]==<the pinned version>".
# CUDA_VISIBLE_DEVICES chooses the GPUs; MIXED=1 computes in bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
extra=()
[[ "${MIXED:-0}" == 1 ]] && extra+=(--config.model.compute_dtype=bfloat16)
exec "${PYTHON:-python}" -m mfgr_jax.main "$@" "${extra[@]}"
