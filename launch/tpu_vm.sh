#!/usr/bin/env bash
# Train on a Cloud TPU VM: create it, copy this repo, install, run, fetch the log, delete.
#
#   launch/tpu_vm.sh --zone=europe-west4-a --accelerator-type=v3-8 \
#       --workdir=gs://BUCKET/runs/demo [--config=configs/default.py] [-- --config.FIELD=V ...]
#
# Steps (each a gcloud command; --dry_run prints them instead):
#   1. gcloud compute tpus tpu-vm create NAME --zone --accelerator-type --version [--spot]
#   2. gcloud compute tpus tpu-vm scp --recurse <repo copy> NAME:~/ --worker=all
#   3. gcloud compute tpus tpu-vm ssh NAME --worker=all --command='pip install -e .'
#   4. gcloud compute tpus tpu-vm ssh NAME --worker=0 --command='python3 -m trainer.main ...'
#   5. gcloud compute tpus tpu-vm scp NAME:trainer-job.log LOG_DIR/ --worker=0  (also on failure)
#   6. gcloud compute tpus tpu-vm delete NAME --quiet   (on any exit, Ctrl-C too; not with --keep)
#
# Single host vs pod slice. A type whose number is 8 or less (v2-8, v3-8, v4-8, v5p-8,
# v5litepod-8, v6e-8) is one TPU VM: the job runs there with --strategy=tpu --tpu=local. A
# bigger type (v3-32, v4-16, ...) is a multi-host pod slice, and TensorFlow drives the whole
# slice from ONE client process: the job runs on worker 0 only, with --strategy=tpu
# --tpu=NAME (resolved through the Cloud TPU API, hence google-api-python-client and
# oauth2client are installed too) and TPU_LOAD_LIBRARY=0 (the client must not claim worker
# 0's chips; the TPU runtime on every host owns them). Every host runs part of the input
# pipeline, so --workdir and --data_dir must be gs:// paths that all hosts can reach, and the
# runtime version must be a -pod one (tpu-vm-tf-X.Y.Z-pod-pjrt) on a slice and a non-pod one
# on a single host; the default --version picks the right one. The code is installed on every
# host (--worker=all) so the same tree is everywhere, though only worker 0 runs it.
#
# TensorFlow comes with the runtime version (TF_VERSION below, the newest we know of; the
# PyPI tensorflow-tpu wheels lag behind TensorFlow). `pip install -e .` is constrained to the
# preinstalled tensorflow version so it cannot replace the TPU build.
#
# Preemption. trainer.main exits with status 4 when SIGTERM (spot preemption, maintenance)
# stopped it after writing a checkpoint; rerunning the same command resumes. With
# --retries=N > 0 the job is rerun up to N times on status 4; with --spot, if the VM itself was
# preempted (state PREEMPTED: spot TPUs cannot be restarted), it is deleted, created again,
# and the code copied and installed again before the rerun. The workdir is on gs://, so the
# new VM resumes from the last checkpoint.
#
# Options (--opt=VALUE or --opt VALUE):
#   --name=NAME               TPU name (default trainer-<date>-<time>)
#   --zone=ZONE               required, e.g. europe-west4-a, us-central2-b
#   --project=PROJECT         default: gcloud's configured project
#   --accelerator-type=TYPE   default v3-8
#   --version=VERSION         TPU runtime (default tpu-vm-tf-TF_VERSION-pjrt, or
#                             tpu-vm-tf-TF_VERSION-pod-pjrt for a pod slice)
#   --config=FILE             a configs/*.py file of this repo (default configs/default.py)
#   --workdir=gs://...        required: checkpoints, TensorBoard events, config.json
#   --data_dir=gs://...       TFDS data_dir (--config.data_dir); required on a pod slice
#   --spot                    create a Spot TPU VM (cheaper, preemptible)
#   --retries=N               rerun the job up to N times when it exits 4 (default 0)
#   --log_dir=DIR             where the job's log is fetched to (default logs)
#   --keep                    do not delete the TPU VM at the end
#   --dry_run                 print every command instead of running it
#   -h, --help                this help
#   -- ARGS                   passed on to trainer.main, e.g. -- --config.total_steps=1000
#
# Exit status: the job's (0 done, 2 bad config, 3 NaN loss, 4 preempted after the retries),
# 2 for bad options, or gcloud's status when a step before the job fails.
set -euo pipefail

TF_VERSION=2.17.1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="launch/tpu_vm.sh"

die() { echo "$PROG: error: $*" >&2; exit 2; }
say() { echo "[tpu_vm] $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

NAME="trainer-$(date +%Y%m%d-%H%M%S)" ZONE="" PROJECT="" ACCEL="v3-8" VERSION=""
CONFIG="configs/default.py" WORKDIR="" DATA_DIR="" LOG_DIR="logs" RETRIES=0
SPOT=0 KEEP=0 DRY=0
EXTRA=()
while (($#)); do
  opt="$1" val="" has_val=0
  if [[ "$opt" == --*=* ]]; then val="${opt#*=}" opt="${opt%%=*}" has_val=1; fi
  case "$opt" in
    --name|--zone|--project|--accelerator-type|--version|--config|--workdir|--data_dir|\
    --retries|--log_dir)
      if ((!has_val)); then
        (($# >= 2)) && [[ "$2" != -* ]] || die "$opt needs a value"
        val="$2"; shift
      fi;;
    --spot|--keep|--dry_run|-h|--help) ((!has_val)) || die "$opt takes no value";;
    --) shift; EXTRA=("$@"); break;;
    *) die "unknown option '$1' (see --help)";;
  esac
  case "$opt" in
    --name) NAME="$val";; --zone) ZONE="$val";; --project) PROJECT="$val";;
    --accelerator-type) ACCEL="$val";; --version) VERSION="$val";; --config) CONFIG="$val";;
    --workdir) WORKDIR="$val";; --data_dir) DATA_DIR="$val";; --retries) RETRIES="$val";;
    --log_dir) LOG_DIR="$val";; --spot) SPOT=1;; --keep) KEEP=1;; --dry_run) DRY=1;;
    -h|--help) usage; exit 0;;
  esac
  shift
done

[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name: '$NAME' must be lowercase letters, digits and hyphens, starting with a letter"
[[ -n "$ZONE" ]] || die "--zone is required, e.g. --zone=europe-west4-a"
[[ "$ACCEL" =~ ^v[0-9]+[a-z]*-([0-9]+)$ ]] ||
  die "--accelerator-type: '$ACCEL' is not like v3-8, v4-32, v5litepod-16, v6e-8"
POD=0; ((BASH_REMATCH[1] > 8)) && POD=1
if [[ -z "$VERSION" ]]; then
  if ((POD)); then VERSION="tpu-vm-tf-$TF_VERSION-pod-pjrt"; else VERSION="tpu-vm-tf-$TF_VERSION-pjrt"; fi
elif ((POD)) && [[ "$VERSION" != *-pod* ]]; then
  die "--version: $ACCEL is a multi-host pod slice; use a -pod runtime, e.g. tpu-vm-tf-$TF_VERSION-pod-pjrt"
elif ((!POD)) && [[ "$VERSION" == *-pod* ]]; then
  die "--version: $ACCEL is a single host; use a runtime without -pod, e.g. tpu-vm-tf-$TF_VERSION-pjrt"
fi
[[ "$WORKDIR" == gs://?* ]] || die "--workdir must be a gs:// path (got '$WORKDIR'): the VM is deleted at the end"
[[ -z "$DATA_DIR" || "$DATA_DIR" == gs://?* ]] || die "--data_dir must be a gs:// path (got '$DATA_DIR')"
((!POD)) || [[ -n "$DATA_DIR" ]] || die "--data_dir=gs://... is required on a pod slice: every host reads the data"
[[ "$RETRIES" =~ ^[0-9]+$ ]] || die "--retries must be an integer >= 0 (got '$RETRIES')"
if [[ -f "$CONFIG" ]]; then cfg="$CONFIG"; elif [[ -f "$REPO/$CONFIG" ]]; then cfg="$REPO/$CONFIG"
else die "--config: no such file '$CONFIG'"; fi
CONFIG_ABS="$(cd "$(dirname "$cfg")" && pwd)/$(basename "$cfg")"
[[ "$CONFIG_ABS" == "$REPO"/* ]] || die "--config: '$CONFIG' is not inside $REPO, which is what gets copied"
CONFIG_REL="${CONFIG_ABS#"$REPO"/}"

((DRY)) || command -v gcloud > /dev/null ||
  die "gcloud not found; install the Google Cloud CLI (or use --dry_run)"

# Prints a command (quoted so that it can be pasted into a shell) or runs it.
show() {
  local a out=()
  for a in "$@"; do
    if [[ "$a" =~ ^[-A-Za-z0-9_./:=,@%+]+$ ]]; then out+=("$a"); else out+=("${a@Q}"); fi
  done
  echo "+ ${out[*]}"
}
run() { if ((DRY)); then show "$@"; else show "$@" >&2; "$@"; fi; }

GC=(--zone="$ZONE")
[[ -z "$PROJECT" ]] || GC+=(--project="$PROJECT")
TPU=(gcloud compute tpus tpu-vm)
CREATED=0
STAGE="$(mktemp -d)"

cleanup() {
  local rc=$?
  if ((CREATED && !KEEP)); then
    run "${TPU[@]}" delete "$NAME" "${GC[@]}" --quiet || say "could not delete $NAME: delete it by hand!"
  elif ((CREATED && !DRY)); then
    say "kept $NAME; delete it with: ${TPU[*]} delete $NAME ${GC[*]} --quiet"
  fi
  rm -rf "$STAGE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pins='python3 -m pip list --format=freeze 2>/dev/null | grep -iE "^tensorflow(-cpu|-tpu)?==" > ~/trainer-pins.txt'
INSTALL="cd ~/trainer && $pins; python3 -m pip install -e . -c ~/trainer-pins.txt"
((!POD)) || INSTALL+=" google-api-python-client oauth2client"
JOB=(python3 -m trainer.main --strategy=tpu)
if ((POD)); then JOB=(env TPU_NAME="$NAME" TPU_LOAD_LIBRARY=0 "${JOB[@]}" --tpu="$NAME")
else JOB+=(--tpu=local); fi
JOB+=(--config="$CONFIG_REL" --workdir="$WORKDIR")
[[ -z "$DATA_DIR" ]] || JOB+=(--config.data_dir="$DATA_DIR")
JOB+=("${EXTRA[@]}")
JOB_CMD="set -o pipefail; cd ~/trainer && $(printf '%q ' "${JOB[@]}")2>&1 | tee -a ~/trainer-job.log"

setup() {
  local create=("${TPU[@]}" create "$NAME" "${GC[@]}" --accelerator-type="$ACCEL" --version="$VERSION")
  ((!SPOT)) || create+=(--spot)
  run "${create[@]}"
  CREATED=1
  if ((DRY)); then
    echo "+ # copy $REPO (without .git, runs, logs, caches) to $STAGE/trainer"
  else
    mkdir -p "$STAGE/trainer"
    tar -C "$REPO" --exclude=./.git --exclude=./runs --exclude=./logs --exclude=__pycache__ \
      --exclude=.pytest_cache --exclude='*.egg-info' -cf - . | tar -C "$STAGE/trainer" -xf -
  fi
  run "${TPU[@]}" scp --recurse "$STAGE/trainer" "$NAME:~/" "${GC[@]}" --worker=all
  run "${TPU[@]}" ssh "$NAME" "${GC[@]}" --worker=all --command="$INSTALL"
}

preempted() {  # whether the VM is gone to a spot preemption (it cannot be restarted)
  local state
  state="$("${TPU[@]}" describe "$NAME" "${GC[@]}" --format='value(state)' 2>/dev/null || echo UNKNOWN)"
  say "TPU $NAME state: $state"
  [[ "$state" == PREEMPTED || "$state" == TERMINATED ]]
}

say "$ACCEL ($( ((POD)) && echo "pod slice: job on worker 0 only" || echo "single host")), runtime $VERSION"
setup
attempt=0
while :; do
  rc=0
  run "${TPU[@]}" ssh "$NAME" "${GC[@]}" --worker=0 --command="$JOB_CMD" || rc=$?
  ((DRY)) || mkdir -p "$LOG_DIR"
  run "${TPU[@]}" scp "$NAME:trainer-job.log" "$LOG_DIR/$NAME.log" "${GC[@]}" --worker=0 ||
    say "could not fetch the job log"
  ((rc != 0 && attempt < RETRIES)) || break
  if ((SPOT)) && preempted; then
    say "job status $rc and the VM was preempted: creating it again (resumes from $WORKDIR)"
    run "${TPU[@]}" delete "$NAME" "${GC[@]}" --quiet
    CREATED=0
    setup
  elif ((rc != 4)); then
    break
  fi
  attempt=$((attempt + 1))
  say "job stopped with status $rc (preempted); rerun $attempt of $RETRIES"
done
((DRY)) || say "job exit status $rc; log in $LOG_DIR/$NAME.log; results in $WORKDIR"
exit "$rc"
