#!/usr/bin/env bash
# The one GPU run, sized to a lent machine (one command of at most 10 minutes; this finishes in under 9).
#
#   bash benchmarks/gpu_check.sh --out=OUT [--data_dir=gpu_data] [--dry_run]
#
# Run from the checkout root. --data_dir holds cifar10_jpeg.npz and cifar100_jpeg.npz (carry that ignored folder
# to the machine); nothing is downloaded. Each step writes its JSON into OUT as it goes, OUT/steps.json says
# for every step its exit status and wall seconds, and OUT/steps.log holds every step's output, so a run killed
# at any point still leaves what it measured, in at most 8 files, none below OUT (what a lent machine returns):
#   1. throughput_b128.json, throughput_b512.json: bf16 train throughput and MFU of every survey architecture;
#   2. train_k.json: train_k with the vmapped model axis for K = 1, 8, 32 (cnn_small and wrn28_2) against
#      K sequential trainings;
#   3. datafree.json: DFME's paper recipe (benchmarks/datafree.py --preset=paper: batch 256, ngf 64) against a
#      CIFAR-10 resnet18 victim of a few epochs, for about a minute: its curve and queries per second, to
#      extrapolate the paper's 20M queries (the curve so far is written at each report, so a timeout keeps it);
#   4. paper_tables.json, paper_tables.md: survey_tables.py --preset=paper for one victim (a few epochs) and one
#      surrogate row, with seconds per epoch to extrapolate the full preset (its workdir, checkpoints and all,
#      stays in a temporary folder).
# --dry_run: the same steps at tiny sizes on any machine, but the data-free one (a test runs it on CPU in under 2
# minutes; tests/datafree_test.py covers the attack).
set -u

OUT="" DATA_DIR="gpu_data" DRY=0
for arg in "$@"; do
  case "$arg" in
    --out=*) OUT="${arg#--out=}" ;;
    --data_dir=*) DATA_DIR="${arg#--data_dir=}" ;;
    --dry_run) DRY=1 ;;
    *) echo "error: unknown argument $arg (usage: gpu_check.sh --out=DIR [--data_dir=DIR] [--dry_run])" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "error: --out=DIR is required" >&2; exit 2; }
missing=""
for f in cifar10_jpeg.npz cifar100_jpeg.npz; do
  [ -f "$DATA_DIR/$f" ] || missing="$missing $DATA_DIR/$f"
done
[ -z "$missing" ] || { echo "error: missing data file(s):$missing (carry them in --data_dir)" >&2; exit 2; }
[ -f mlpriv_jax/__init__.py ] || { echo "error: run from the mlpriv_jax checkout root" >&2; exit 2; }

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
START=$(date +%s)
DEADLINE=$((START + 525))          # the paper-table step gets what is left of 8 min 45 s
STEPS="$OUT/steps.json"
echo "{}" > "$STEPS"
: > "$OUT/steps.log"

step() {  # step NAME SECONDS CMD...: runs CMD under a timeout and records its exit status and wall seconds
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit} s)" >&2
  echo "== $name: $*" >> "$OUT/steps.log"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >> "$OUT/steps.log" 2>&1
  local rc=$?
  "$PY" - "$STEPS" "$name" "$rc" "$(( $(date +%s) - t0 ))" <<'EOF'
import json, os, sys
path, name, rc, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
steps = json.load(open(path))
steps[name] = dict(exit_status=rc, wall_seconds=secs, timed_out=rc in (124, 137))
with open(path + ".tmp", "w") as f:
  json.dump(steps, f, indent=2)
os.replace(path + ".tmp", path)
EOF
  echo "   exit $rc after $(( $(date +%s) - t0 )) s" >&2
}

if [ "$DRY" = 1 ]; then
  ARCHS=cnn_tiny BATCHES="8" KS=2 K_ARCHS=cnn_tiny PEAK=0 STEPS_N=2
  TABLE_FLAGS="--num_train=128 --budget=128 --num_test=128 --archs=wres16=cnn_tiny --victim_epochs=1
               --surrogate_epochs=1"
  DATAFREE_FLAGS=""   # compiling DFME's four functions on a CPU costs more than the rest of the dry run
else
  ARCHS=wrn16_8,wrn22_8,resnet32,resnet18,vgg16 BATCHES="128 512" KS=1,8,32 K_ARCHS=cnn_small,wrn28_2 PEAK=989
  STEPS_N=5 TABLE_FLAGS="--victim_epochs=3 --surrogate_epochs=2"
  DATAFREE_FLAGS="--preset=paper --data_dir=$DATA_DIR --victim_epochs=3 --dfme_budget=1000000 --report_every=200000"
fi

for b in $BATCHES; do
  step "throughput_b$b" 120 "$PY" benchmarks/train_throughput.py --archs="$ARCHS" --ks= --batch_size="$b" \
    --steps="$STEPS_N" --dtype=bfloat16 --peak_tflops="$PEAK" --torch=false --out="$OUT/throughput_b$b.json"
done
# vmap only: sequential training is timed by the benchmark itself, and unrolling K = 32 WRN copies would
# spend the step compiling.
step train_k 150 "$PY" benchmarks/train_throughput.py --archs= --k_archs="$K_ARCHS" --ks="$KS" \
  --model_axes=vmap --steps="$STEPS_N" --torch=false --out="$OUT/train_k.json"
if [ -n "$DATAFREE_FLAGS" ]; then
  # shellcheck disable=SC2086
  step datafree 120 "$PY" benchmarks/datafree.py $DATAFREE_FLAGS --disguide_budget=0 --reach_steps=0 --out="$OUT/datafree.json"
fi
LEFT=$((DEADLINE - $(date +%s)))
if [ "$LEFT" -gt 30 ]; then
  # shellcheck disable=SC2086
  step paper_tables "$LEFT" "$PY" experiments/survey_tables.py --preset=paper --data_dir="$DATA_DIR" \
    --workdir="$WORK/paper_tables" --tables=table1 --surrogates=wres16 $TABLE_FLAGS
  for ext in json md; do
    [ -f "$WORK/paper_tables/tables.$ext" ] && cp "$WORK/paper_tables/tables.$ext" "$OUT/paper_tables.$ext"
  done
else
  echo "   paper_tables skipped: ${LEFT} s left" >&2
fi
echo "done in $(( $(date +%s) - START )) s; results in $OUT" >&2
