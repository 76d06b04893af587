#!/usr/bin/env bash
# Runs mfgr_jax on every worker of a Cloud TPU VM pod slice (e.g. v4-32).
#
#   TPU=my-pod ZONE=us-central2-b TYPE=v4-32 WORKDIR=/mnt/shared/run1 \
#     launch/tpu_pod.sh --config configs/cifar100_5phase.py --config.method=mfgr
#
# Creates the slice if it does not exist (CREATE=1), copies this checkout to
# every worker, installs requirements.txt there (jax[tpu] instead of the CPU
# jax), and starts the same command on all workers at once. Each worker is one
# JAX process: `--distributed` makes jax.distributed.initialize() read the
# pod's topology from the TPU metadata. WORKDIR must be a folder every worker
# sees (a Filestore/NFS mount); only process 0 writes results and TensorBoard
# files, Orbax checkpoints are written and restored by all processes.
# Rerunning the same command resumes from the last checkpoint (e.g. after a
# preemption).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR to a shared folder}"
TYPE=${TYPE:-v4-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
REMOTE_DIR=${REMOTE_DIR:-mfgr_jax}

if [[ "${CREATE:-0}" == 1 ]] && ! gcloud compute tpus tpu-vm describe "$TPU" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"
fi
cd "$(dirname "$0")/.."
JAX_VERSION=$(sed -n 's/^jax==//p' requirements.txt)
gcloud compute tpus tpu-vm scp --recurse --worker=all --zone "$ZONE" \
  mfgr_jax configs launch requirements.txt "$TPU:$REMOTE_DIR/"
gcloud compute tpus tpu-vm ssh "$TPU" --worker=all --zone "$ZONE" --command "
  cd $REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate &&
  pip install -q -r requirements.txt 'jax[tpu]==$JAX_VERSION' &&
  python -m mfgr_jax.main --distributed --workdir '$WORKDIR' $*"
