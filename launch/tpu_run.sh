#!/usr/bin/env bash
# Runs one sdeseg_jax job on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_run.sh TPU_NAME ZONE configs/ssda_gta.py gs://bucket/workdir [--config.x=y ...]
#
# The repository must already be on every worker (see launch/tpu_setup.sh).
# jax.distributed.initialize() auto-detects the pod topology (--distributed).
# The workdir must be shared by all workers (a GCS path or a shared mount),
# because orbax writes one checkpoint from all processes.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [extra flags...]" >&2
  exit 2
fi
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
extra="$*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/sdeseg_jax && python3 -m sdeseg_jax.main --distributed \
   --config=$config --workdir=$workdir $extra"
