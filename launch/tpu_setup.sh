#!/usr/bin/env bash
# Copies the repository to every worker of a TPU VM pod slice and installs
# the pinned stack with jax[tpu] in place of the CPU jax.
#
#   launch/tpu_setup.sh TPU_NAME ZONE
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 TPU_NAME ZONE" >&2
  exit 2
fi
tpu=$1; zone=$2
root=$(cd "$(dirname "$0")/.." && pwd)
gcloud compute tpus tpu-vm scp --recurse "$root" "$tpu":~/sdeseg_jax \
  --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/sdeseg_jax && sed 's/^jax==/jax[tpu]==/' requirements.txt > /tmp/req_tpu.txt \
   && pip install -r /tmp/req_tpu.txt"
