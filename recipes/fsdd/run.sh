#!/usr/bin/env bash
# The FSDD recipe, end to end, with the venv active (from any folder):
#
#   bash recipes/fsdd/run.sh [WORK]        # WORK defaults to /tmp/fsdd (outside the repo)
#
# DATA=/path/to/fsdd overrides the input folder (default ../shared/data/fsdd beside the repository).
# Steps bundle and figures write into the repository: specnet/bundled/fsdd.safetensors,
# recipes/fsdd/confusion_official.png and recipes/fsdd/george_three.png.
# STEPS="prepare official loso adapt bundle figures" picks steps (default: all of them).
# JOBS=N runs N leave-one-speaker-out trainings at a time (default 1).
set -euo pipefail

absolute() { python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$1"; }   # realpath -m is not everywhere
work=$(absolute "${1:-/tmp/fsdd}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=$(absolute "${DATA:-$repo/../shared/data/fsdd}")
steps=${STEPS:-prepare official loso adapt bundle figures}
jobs=${JOBS:-1}
for step in $steps; do
  case $step in
  prepare | official | loso | adapt | bundle | figures) ;;
  *) echo "unknown step $step in STEPS (prepare official loso adapt bundle figures, separated by spaces)" >&2; exit 2 ;;
  esac
done
if [[ ! $jobs =~ ^[1-9][0-9]*$ ]]; then
  echo "JOBS=$jobs: give how many runs at a time, a number from 1" >&2; exit 2
fi
cd "$repo"   # the commands below name recipes/ and specnet/bundled/ from the repository root
cfg=recipes/fsdd/config.toml
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # small model: one thread per run is the efficient choice on a busy CPU
runs=$work/runs
evals=$work/eval
has() { [[ " $steps " == *" $1 "* ]]; }
each_speaker() {   # runs "$1 K" for the six speaker folds K, JOBS at a time; a failed fold stops the rest
  # "$1" runs on the left of ||, where bash ignores set -e: each of its commands checks its own status.
  export -f "$1"
  export cfg work runs evals data
  # Exit status 255 makes xargs start no further fold (the ones running finish).
  printf '%s\n' 1 2 3 4 5 6 | xargs -P "$jobs" -n 1 bash -c 'set -euo pipefail; '"$1"' "$0" || exit 255'
}

# 1. Prepare: links the recordings into WORK and writes official.csv and loso.csv.
if has prepare; then
  python recipes/fsdd/prepare.py "$work" --data "$data" --force
fi

# 2. Official split: train on takes 5-49 (fold 1), validate on takes 0-4 (fold 0, the 300 test files).
if has official; then
  specnet train --config "$cfg" --manifest "$work/official.csv" --val-fold 0 --out "$runs/official" --overwrite
  specnet evaluate "$runs/official/model.safetensors" --manifest "$work/official.csv" --fold 0 \
    --out "$evals/official" --overwrite
fi

# 3. Leave one speaker out: fold K of loso.csv is speaker K (1=george 2=jackson 3=lucas 4=nicolas 5=theo 6=yweweler).
if has loso; then
  loso_fold() {
    local k=$1
    specnet train --config "$cfg" --manifest "$work/loso.csv" --val-fold "$k" --out "$runs/loso$k" --overwrite \
      > "$runs/loso$k.log" 2>&1 || { echo "speaker fold $k: training failed, see $runs/loso$k.log" >&2; return 1; }
    specnet evaluate "$runs/loso$k/model.safetensors" --manifest "$work/loso.csv" --fold "$k" \
      --out "$evals/loso$k" --overwrite > "$evals/loso$k.txt" \
      || { echo "speaker fold $k: evaluation failed" >&2; return 1; }
    head -n 1 "$evals/loso$k.txt" | sed "s/^/speaker fold $k: /"
  }
  mkdir -p "$runs" "$evals"
  each_speaker loso_fold
  python - "$evals" <<'EOF'
import json, sys
names = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
accs = [json.load(open(f"{sys.argv[1]}/loso{k}/metrics.json"))["accuracy"] for k in range(1, 7)]
for name, acc in zip(names, accs):
    print(f"{name:<9} {100 * acc:6.2f} %")
print(f"mean      {100 * sum(accs) / len(accs):6.2f} %")
EOF
fi

# 4. Each leave-one-speaker-out model adapted to its held-out speaker's 500 recordings without their
#    labels (`specnet adapt`: batch-norm statistics measured again), then scored on the same recordings.
if has adapt; then
  adapt_fold() {
    local speakers=(george jackson lucas nicolas theo yweweler)
    local k=$1 name=${speakers[$1 - 1]}
    specnet adapt "$runs/loso$k/model.safetensors" "$work/*/*/*_${name}_*.wav" -o "$runs/loso$k/adapted.safetensors" \
      --overwrite 2> "$runs/adapt$k.log" || { echo "speaker fold $k: adapting failed, see $runs/adapt$k.log" >&2; return 1; }
    specnet evaluate "$runs/loso$k/adapted.safetensors" --manifest "$work/loso.csv" --fold "$k" \
      --out "$evals/adapted$k" --overwrite > "$evals/adapted$k.txt" \
      || { echo "speaker fold $k: evaluating the adapted model failed" >&2; return 1; }
    head -n 1 "$evals/adapted$k.txt" | sed "s/^/adapted to speaker $k: /"
  }
  mkdir -p "$runs" "$evals"
  each_speaker adapt_fold
  python - "$evals" <<'EOF'
import json, sys
names = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
for name, k in zip(names, range(1, 7)):
    before, after = (json.load(open(f"{sys.argv[1]}/{kind}{k}/metrics.json"))["accuracy"] for kind in ("loso", "adapted"))
    print(f"{name:<9} {100 * before:6.2f} % -> {100 * after:6.2f} % adapted")
EOF
fi

# 5. The bundled model: the official-split training again (same seed, so the same weights), now with
#    the measured test accuracy written into its metadata ([dataset] is the last table of config.toml,
#    so an appended key lands in it).
if has bundle; then
  if [[ ! -f $evals/official/metrics.json ]]; then
    echo "bundle: no $evals/official/metrics.json; run the official step first (STEPS=\"official bundle\")" >&2; exit 1
  fi
  acc=$(python -c "import json,sys; print(f\"{100 * json.load(open(sys.argv[1]))['accuracy']:.2f} %\")" \
    "$evals/official/metrics.json")
  { cat "$cfg"; echo "accuracy = \"$acc on the official test split (takes 0-4, 300 files)\""; } > "$work/bundle.toml"
  specnet train --config "$work/bundle.toml" --manifest "$work/official.csv" --val-fold 0 --out "$runs/bundle" --overwrite
  specnet evaluate "$runs/bundle/model.safetensors" "$work/test" --out "$evals/bundle" --overwrite
  cp "$runs/bundle/model.safetensors" specnet/bundled/fsdd.safetensors
  cp "$evals/bundle/confusion.png" recipes/fsdd/confusion_official.png
  specnet classify --model fsdd examples/seven.wav --top-k 3
  specnet evaluate fsdd "$work/test"
fi

# 6. The README's picture of george's "three", drawn with the bundled model's front-end.
if has figures; then
  python recipes/fsdd/plot_three.py --data "$data"
fi
