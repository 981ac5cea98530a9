#!/usr/bin/env bash
# Train on one multi-GPU machine: trainer.main --strategy=mirrored over every visible GPU.
#
#   launch/workstation.sh --config=configs/cifar10_resnet.py --workdir=runs/cifar \
#       [--retries=3] [-- --config.total_steps=20000 ...]
#
# MirroredStrategy takes every GPU TensorFlow sees; restrict them with CUDA_VISIBLE_DEVICES
# (e.g. CUDA_VISIBLE_DEVICES=0,1 launch/workstation.sh ...). The GPU count is printed first
# (from nvidia-smi -L when it is installed); with no GPU the job runs on the CPU. The global
# batch (config.global_batch_size) is split evenly over the GPUs, so it must divide by their
# number. Run from any directory: the repo is put on PYTHONPATH; relative --config and
# --workdir paths are relative to where you are.
#
# Preemption. trainer.main exits with status 4 after SIGTERM made it write a checkpoint; with
# --retries=N the job is rerun (and resumes from the workdir) up to N times on status 4. A
# SIGTERM/SIGINT sent to this script is passed on to the job, and then no rerun happens.
#
# Options (--opt=VALUE or --opt VALUE):
#   --config=FILE     a configs/*.py file (default: the repo's configs/default.py)
#   --workdir=DIR     run directory, local or gs:// (default runs/<date>-<time>-<pid>, as
#                     trainer.main's); resumed if it already has checkpoints
#   --retries=N       rerun up to N times when the job exits 4 (default 0)
#   --dry_run         print the command (with the PYTHONPATH it runs with) instead of running it
#   -h, --help        this help
#   -- ARGS           passed on to trainer.main, e.g. -- --config.total_steps=1000
# Environment: PYTHON (default python3) runs the job.
#
# Exit status: the job's (0 done, 2 bad config, 3 NaN loss, 4 preempted after the retries), or
# 2 for bad options.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="launch/workstation.sh"

die() { echo "$PROG: error: $*" >&2; exit 2; }
say() { echo "[workstation] $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# The pid as in trainer.main's default: two launches in the same second get their own workdir.
CONFIG="$REPO/configs/default.py" WORKDIR="runs/$(date +%Y%m%d-%H%M%S)-$$" RETRIES=0 DRY=0
EXTRA=()
while (($#)); do
  opt="$1" val="" has_val=0
  if [[ "$opt" == --*=* ]]; then val="${opt#*=}" opt="${opt%%=*}" has_val=1; fi
  case "$opt" in
    --config|--workdir|--retries)
      if ((!has_val)); then
        (($# >= 2)) && [[ "$2" != -* ]] || die "$opt needs a value"
        val="$2"; shift
      fi;;
    --dry_run|-h|--help) ((!has_val)) || die "$opt takes no value";;
    --) shift; EXTRA=("$@"); break;;
    *) die "unknown option '$1' (see --help)";;
  esac
  case "$opt" in
    --config) CONFIG="$val";; --workdir) WORKDIR="$val";; --retries) RETRIES="$val";;
    --dry_run) DRY=1;; -h|--help) usage; exit 0;;
  esac
  shift
done
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--retries must be an integer >= 0 (got '$RETRIES')"
[[ -f "$CONFIG" ]] || die "--config: no such file '$CONFIG'"
[[ -n "$WORKDIR" ]] || die "--workdir must not be empty"
for a in "${EXTRA[@]}"; do
  [[ "$a" != --strategy* ]] || die "do not pass --strategy after --: this script runs --strategy=mirrored"
done

if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
  IFS=, read -ra ids <<< "$CUDA_VISIBLE_DEVICES"
  gpus=0
  for id in "${ids[@]}"; do [[ -z "$id" || "$id" == -* ]] && break; gpus=$((gpus + 1)); done
  say "GPUs: $gpus (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES)"
elif command -v nvidia-smi > /dev/null; then
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  say "GPUs: $gpus (nvidia-smi -L)"
else
  gpus=0
  say "GPUs: none found (no nvidia-smi); MirroredStrategy will use the CPU"
fi

CMD=("${PYTHON:-python3}" -m trainer.main --strategy=mirrored --config="$CONFIG" --workdir="$WORKDIR"
     "${EXTRA[@]}")
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ((DRY)); then  # the command as it would run, pasteable: the repo on PYTHONPATH included
  printf '%q ' "PYTHONPATH=$PYTHONPATH" "${CMD[@]}"
  echo
  exit 0
fi

export PYTHONPATH
child=0 stopping=0
forward() { stopping=1; ((child)) && kill -TERM "$child" 2>/dev/null || true; }
trap forward INT TERM
attempt=0
while :; do
  say "running (attempt $((attempt + 1)) of $((RETRIES + 1))): ${CMD[*]}"
  "${CMD[@]}" &
  child=$!
  rc=0
  # `wait` returns early when a trapped signal arrives; wait again until the job is gone.
  while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  ((rc == 4 && attempt < RETRIES && !stopping)) || break
  attempt=$((attempt + 1))
  say "job preempted (status 4, checkpoint written); rerun $attempt of $RETRIES"
done
say "job exit status $rc; results in $WORKDIR"
exit "$rc"
