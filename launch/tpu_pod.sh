#!/usr/bin/env bash
# One sdeseg_jax job on a Cloud TPU VM pod slice, from your workstation.
#
#   launch/tpu_pod.sh create              # create the TPU VM (every worker)
#   launch/tpu_pod.sh install             # copy this repository, pip install with jax[tpu]
#   launch/tpu_pod.sh run CONFIG WORKDIR [--config.x=y ...]
#                                         # start the job on every worker (background)
#   launch/tpu_pod.sh logs [WORKER]       # stream a worker's log (default 0; "all")
#   launch/tpu_pod.sh stop                # SIGTERM the job: it checkpoints, then exits
#   launch/tpu_pod.sh delete              # delete the TPU VM
#   launch/tpu_pod.sh all CONFIG WORKDIR [flags...]
#                                         # create, install, run, stream logs, delete
#
# Settings (environment): TPU_NAME (default sdeseg), ZONE (us-central2-b),
# ACCELERATOR_TYPE (v4-32), RUNTIME_VERSION (tpu-ubuntu2204-base),
# PROJECT (gcloud's default project if empty), PREEMPTIBLE=1 for a spot VM.
#
# WORKDIR must be shared by every worker (a gs:// path or a shared mount):
# orbax writes one checkpoint from all processes. Every worker runs
# `python -m sdeseg_jax.main --distributed`; jax.distributed.initialize()
# finds the pod's topology itself. Rerunning `run` with the same WORKDIR
# resumes from the last checkpoint.
set -euo pipefail

TPU_NAME=${TPU_NAME:-sdeseg}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
PREEMPTIBLE=${PREEMPTIBLE:-0}
GCLOUD=${GCLOUD:-gcloud}
REMOTE_DIR=sdeseg_jax
LOG=sdeseg_job.log
PID=sdeseg_job.pid

usage() {
  echo "usage: $0 create|install|run|logs|stop|delete|all [args]" >&2
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

tpu() {  # gcloud compute tpus tpu-vm SUBCOMMAND ... with zone/project
  local sub=$1
  shift
  local args=(compute tpus tpu-vm "$sub" "$@" --zone "$ZONE")
  if [[ -n $PROJECT ]]; then
    args+=(--project "$PROJECT")
  fi
  "$GCLOUD" "${args[@]}"
}

on_workers() {  # on_workers WORKERS COMMAND: runs COMMAND over ssh
  tpu ssh "$TPU_NAME" --worker="$1" --command "$2"
}

create() {
  local extra=()
  if [[ $PREEMPTIBLE == 1 ]]; then
    extra+=(--spot)
  fi
  tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" \
    --version "$RUNTIME_VERSION" "${extra[@]}"
}

install() {
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  tpu scp --recurse "$root" "$TPU_NAME:~/$REMOTE_DIR" --worker=all
  on_workers all "cd ~/$REMOTE_DIR && \
sed 's/^jax==/jax[tpu]==/' requirements.txt > /tmp/requirements_tpu.txt && \
python3 -m pip install -q -r /tmp/requirements_tpu.txt"
}

job_command() {  # job_command CONFIG WORKDIR [flags...]: the remote command
  local quoted
  quoted=$(printf ' %q' python3 -m sdeseg_jax.main --distributed \
    "--config=$1" "--workdir=$2" "${@:3}")
  printf 'cd ~/%s && { nohup%s > ~/%s 2>&1 < /dev/null & echo $! > ~/%s; }' \
    "$REMOTE_DIR" "$quoted" "$LOG" "$PID"
}

run() {
  if [[ $# -lt 2 ]]; then
    usage
  fi
  on_workers all "$(job_command "$@")"
}

logs() {
  on_workers "${1:-0}" "tail -n +1 -F ~/$LOG"
}

stop() {
  on_workers all "kill -TERM \$(cat ~/$PID) || true"
}

delete() {
  tpu delete "$TPU_NAME" --quiet
}

all() {
  if [[ $# -lt 2 ]]; then
    usage
  fi
  create
  trap delete EXIT
  install
  run "$@"
  # Streams worker 0 until the job exits there, then deletes the VM.
  on_workers 0 "tail -n +1 -F ~/$LOG --pid=\$(cat ~/$PID)"
}

if [[ $# -lt 1 ]]; then
  usage
fi
cmd=$1
shift
case $cmd in
  create | install | run | logs | stop | delete | all) "$cmd" "$@" ;;
  *) usage ;;
esac
