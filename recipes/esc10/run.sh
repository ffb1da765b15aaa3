#!/usr/bin/env bash
# ESC-10 recipe: 5-fold cross-validation, then the shipped model on all 400 clips.
#
#   bash recipes/esc10/run.sh                 # everything (from any folder)
#   bash recipes/esc10/run.sh folds summary   # only some stages: prepare folds summary final
#
# On two cores, two single-threaded lanes are faster than one two-threaded run
# for the folds; the shipped model was trained on two threads (the default):
#   bash recipes/esc10/run.sh prepare
#   FOLDS="1 3 5" THREADS=1 bash recipes/esc10/run.sh folds &
#   FOLDS="2 4" THREADS=1 bash recipes/esc10/run.sh folds; wait
#   bash recipes/esc10/run.sh summary final
#
# WORK (default /tmp/esc10) receives the manifest, the links and every run;
# DATA (default ../shared/data/esc10) is only read. THREADS (default 2) sets
# OMP_NUM_THREADS for training.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-$here/../../../shared/data/esc10}   # ../shared/data/esc10 from the repository root
WORK=${WORK:-/tmp/esc10}
export OMP_NUM_THREADS=${THREADS:-2}
config="$here/config.toml"
stages=${*:-prepare folds summary final}

for stage in $stages; do
  case $stage in
  prepare)
    python "$here/prepare.py" "$WORK" --data "$DATA"
    ;;
  folds)
    for k in ${FOLDS:-1 2 3 4 5}; do
      specnet train --manifest "$WORK/folds.csv" --val-fold "$k" --config "$config" \
        --out "$WORK/runs/fold$k" --overwrite
      specnet evaluate "$WORK/runs/fold$k/model.safetensors" --manifest "$WORK/folds.csv" --fold "$k" \
        --out "$WORK/runs/fold$k/eval" --overwrite
    done
    ;;
  summary)
    # Per-fold accuracy of each fold's saved model (config.toml keeps the last
    # epoch, so nothing is chosen on the test fold), the mean, and the five
    # confusion matrices summed.
    python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
work = Path(sys.argv[1])
accuracies, confusion = [], None
missing = [k for k in range(1, 6) if not (work / "runs" / f"fold{k}" / "eval" / "metrics.json").exists()]
if missing:
    sys.exit(f"summary: no results yet for fold(s) {' '.join(map(str, missing))} in {work / 'runs'}; "
             "run the folds stage for them first (FOLDS=...)")
for k in range(1, 6):
    m = json.loads((work / "runs" / f"fold{k}" / "eval" / "metrics.json").read_text())
    accuracies.append(m["accuracy"])
    confusion = np.array(m["confusion"]) if confusion is None else confusion + np.array(m["confusion"])
    classes = m["classes"]
    print(f"fold {k}: accuracy {m['accuracy']:.4f}")
print(f"mean  : {np.mean(accuracies):.4f}")
(work / "summary.json").write_text(json.dumps({"accuracy": accuracies, "mean": float(np.mean(accuracies)),
    "classes": classes, "confusion": confusion.tolist()}, indent=2))
from specnet import plot_confusion
plot_confusion(confusion, classes, work / "confusion_5folds.png", title="ESC-10, 5 folds, 400 test clips", overwrite=True)
print(f"wrote {work / 'summary.json'} and {work / 'confusion_5folds.png'}")
PY
    ;;
  final)
    specnet train "$WORK/all" --val-split 0 --config "$config" --out "$WORK/runs/all" --overwrite
    ls -l "$WORK/runs/all/model.safetensors"
    echo "to ship: cp $WORK/runs/all/model.safetensors specnet/bundled/esc10.safetensors"
    echo "     and cp $DATA/ATTRIBUTION.txt specnet/bundled/ATTRIBUTION.txt   # the per-clip credits"
    ;;
  *)
    echo "unknown stage $stage (prepare folds summary final)" >&2; exit 2
    ;;
  esac
done
