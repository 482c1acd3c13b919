#!/usr/bin/env bash
# Starts this host's process of a multi-host GPU job (one process per host,
# all local GPUs). Run it on every host with its own PROCESS_ID.
#
#   launch/gpu_multihost.sh COORDINATOR_HOST:PORT NUM_HOSTS PROCESS_ID CONFIG WORKDIR [flags...]
set -euo pipefail
if [[ $# -lt 5 ]]; then
  echo "usage: $0 COORDINATOR_HOST:PORT NUM_HOSTS PROCESS_ID CONFIG WORKDIR [flags...]" >&2
  exit 2
fi
coord=$1; n=$2; i=$3; config=$4; workdir=$5; shift 5
exec python3 -m sdeseg_jax.main --distributed --coordinator_address="$coord" \
  --num_processes="$n" --process_id="$i" --config="$config" --workdir="$workdir" "$@"
