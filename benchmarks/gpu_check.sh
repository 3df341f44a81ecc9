#!/usr/bin/env bash
# The GPU run, sized to a lent machine: the headline first, in two commands of under 8 minutes each.
#
#   bash benchmarks/gpu_check.sh --out=OUT [--data_dir=gpu_data] [--workdir=.gpu_work] [--dry_run]
#
# Run it twice from the checkout root, the second time on the same warm machine: the workdir (an ignored folder of
# the checkout, kept between a lent machine's calls) carries what the first left. --data_dir holds
# cifar10_jpeg.npz and cifar100_jpeg.npz (carry that ignored folder); nothing is downloaded.
#   1. tables: survey_tables.py --preset=gpu, the survey's Tables 1-2 at full scale. The first command (no finished
#      table1 in the workdir) trains the WRN-16-8 victim and table1's five surrogates; the second reuses them and
#      adds the VGG-16 victim and table2's. The decoded data and JAX's compiled programs are cached in the workdir,
#      so the second command pays for neither again. A second command that finds no first one says so and starts
#      from scratch; a command killed at its limit keeps every victim and row it finished (tables.json).
#   2. with the time left, in order, each once over the two commands (the second runs what the first did not
#      finish): loop_overhead.json (wrn16_8 at batch 512 in bfloat16: an epoch of 50,000 images against steps x the
#      bare step's time), throughput_b512.json (every survey architecture, bf16, MFU), train_k.json (the vmapped
#      model axis, K = 1, 8, 32), datafree.json (DFME's paper recipe for about a minute).
# OUT gets at most 8 flat files: steps.json (each step's exit status and wall seconds, rewritten as it goes),
# steps.log (every step's output), tables.json, tables.md and the benchmarks' JSONs. --dry_run: the same at tiny
# sizes on any machine (a test runs both commands on CPU in under 2 minutes).
set -u

OUT="" DATA_DIR="gpu_data" WORKDIR=".gpu_work" DRY=0
for arg in "$@"; do
  case "$arg" in
    --out=*) OUT="${arg#--out=}" ;;
    --data_dir=*) DATA_DIR="${arg#--data_dir=}" ;;
    --workdir=*) WORKDIR="${arg#--workdir=}" ;;
    --dry_run) DRY=1 ;;
    *) echo "error: unknown argument $arg (usage: gpu_check.sh --out=DIR [--data_dir=DIR] [--workdir=DIR]" \
            "[--dry_run])" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "error: --out=DIR is required" >&2; exit 2; }
[ -f mlpriv_jax/__init__.py ] || { echo "error: run from the mlpriv_jax checkout root" >&2; exit 2; }
missing=""
for f in cifar10_jpeg.npz cifar100_jpeg.npz; do
  [ -f "$DATA_DIR/$f" ] || missing="$missing $DATA_DIR/$f"
done
[ -z "$missing" ] || { echo "error: missing data file(s):$missing (carry them in --data_dir)" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
# A damaged file stops the run before anything trains: every array of both files is read (zip's CRC checked).
"$PY" - "$DATA_DIR" <<'EOF' || exit 2
import sys, zipfile, numpy as np
for name in ("cifar10_jpeg.npz", "cifar100_jpeg.npz"):
  path = f"{sys.argv[1]}/{name}"
  try:
    with np.load(path) as z:
      need = {f"{k}_{s}" for k in ("jpeg", "offsets", "y") for s in ("train", "test")}
      if need - set(z.files):
        raise ValueError(f"lacks {sorted(need - set(z.files))}")
      for k in z.files:
        z[k]
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    print(f"error: {path} is damaged ({str(e).splitlines()[0]}); carry an intact copy", file=sys.stderr)
    sys.exit(2)
EOF

mkdir -p "$OUT" "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
export MLPRIV_CACHE_DIR="${MLPRIV_CACHE_DIR:-$WORKDIR/cache}"
export JAX_COMPILATION_CACHE_DIR="$WORKDIR/jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
START=$(date +%s)
DEADLINE=$((START + 465))            # every step ends by 7 min 45 s
STEPS="$OUT/steps.json"
echo "{}" > "$STEPS"
: > "$OUT/steps.log"

step() {  # step NAME SECONDS CMD...: runs CMD under a timeout (at most what is left) and records how it ended
  local name="$1" limit="$2"; shift 2
  if [ -e "$WORKDIR/done/$name" ]; then echo "   $name: measured by the first command" >&2; return; fi
  local left=$((DEADLINE - $(date +%s)))
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 20 ]; then echo "   $name skipped: ${left} s left" >&2; return; fi
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
  case "$name" in tables_*) ;; *) [ "$rc" = 0 ] && mkdir -p "$WORKDIR/done" && : > "$WORKDIR/done/$name" ;; esac
}

if [ "$DRY" = 1 ]; then
  TINY=wres16=cnn_tiny,wres22=cnn_tiny,res32=cnn_tiny,res18=cnn_tiny,vgg16=cnn_tiny
  TABLE_FLAGS="--num_train=1024 --budget=1024 --num_test=256 --archs=$TINY --victim_epochs=1 --surrogate_epochs=1"
  LOOP_FLAGS="--arch=cnn_tiny --batch_size=64 --num_images=256 --epochs=1 --eval_images=64 --repeats=1"
  ARCHS=cnn_tiny KS=2 K_ARCHS=cnn_tiny PEAK=0 STEPS_N=2
  DATAFREE_FLAGS=""   # compiling DFME's four functions on a CPU costs more than the rest of the dry run
else
  TABLE_FLAGS=""
  LOOP_FLAGS="--arch=wrn16_8 --batch_size=512 --num_images=50000 --epochs=2 --eval_images=10000 --repeats=2"
  ARCHS=wrn16_8,wrn22_8,resnet32,resnet18,vgg16 KS=1,8,32 K_ARCHS=cnn_small,wrn28_2 PEAK=989 STEPS_N=5
  DATAFREE_FLAGS="--preset=paper --data_dir=$DATA_DIR --victim_epochs=3 --dfme_budget=1000000 --report_every=200000"
fi

TABLES_DIR="$WORKDIR/tables"
ROWS='import json, sys; print(len(json.load(open(sys.argv[1]))["tables"].get("table1", {}).get("rows", {})))'
if [ -d "$TABLES_DIR" ]; then
  DONE=$("$PY" -c "$ROWS" "$TABLES_DIR/tables.json" 2>/dev/null || echo 0)
  echo "second command: $DONE of table1's 5 rows are in $TABLES_DIR; finishing table1 and adding table2" >&2
  WHICH=table1,table2
else
  echo "first command (or a second one without the first's workdir $TABLES_DIR): starting from scratch with table1" >&2
  WHICH=table1
fi
# shellcheck disable=SC2086
step "tables_${WHICH//,/_}" 450 "$PY" experiments/survey_tables.py --preset=gpu --data_dir="$DATA_DIR" \
  --workdir="$TABLES_DIR" --tables="$WHICH" $TABLE_FLAGS
for ext in json md; do
  [ -f "$TABLES_DIR/tables.$ext" ] && cp "$TABLES_DIR/tables.$ext" "$OUT/tables.$ext"
done

# shellcheck disable=SC2086
step loop_overhead 120 "$PY" benchmarks/loop_overhead.py $LOOP_FLAGS --dtype=bfloat16 --out="$OUT/loop_overhead.json"
B=512; [ "$DRY" = 1 ] && B=8
step "throughput_b$B" 110 "$PY" benchmarks/train_throughput.py --archs="$ARCHS" --ks= --batch_size="$B" \
  --steps="$STEPS_N" --dtype=bfloat16 --peak_tflops="$PEAK" --torch=false --out="$OUT/throughput_b$B.json"
# vmap only: sequential training is timed by the benchmark itself, and unrolling K = 32 WRN copies would
# spend the step compiling.
step train_k 120 "$PY" benchmarks/train_throughput.py --archs= --k_archs="$K_ARCHS" --ks="$KS" \
  --model_axes=vmap --steps="$STEPS_N" --torch=false --out="$OUT/train_k.json"
if [ -n "$DATAFREE_FLAGS" ]; then
  # shellcheck disable=SC2086
  step datafree 120 "$PY" benchmarks/datafree.py $DATAFREE_FLAGS --disguide_budget=0 --reach_steps=0 \
    --out="$OUT/datafree.json"
fi
echo "done in $(( $(date +%s) - START )) s; results in $OUT, the tables' workdir $TABLES_DIR" >&2
