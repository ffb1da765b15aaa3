#!/usr/bin/env bash
# ESC-10 recipe: 5-fold cross-validation, then the shipped model on all 400 clips.
#
#   bash recipes/esc10/run.sh                 # everything (from the repository root)
#   bash recipes/esc10/run.sh folds summary   # only some stages: prepare folds summary final
#
# On two cores, two single-threaded lanes are faster than one two-threaded run:
#   bash recipes/esc10/run.sh prepare
#   FOLDS="1 3 5" THREADS=1 bash recipes/esc10/run.sh folds &
#   FOLDS="2 4" THREADS=1 bash recipes/esc10/run.sh folds final; wait
#   bash recipes/esc10/run.sh summary
#
# WORK (default /tmp/esc10) receives the manifest, the links and every run;
# DATA (default ../shared/data/esc10) is only read. THREADS (default 2) sets
# OMP_NUM_THREADS for training.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-../shared/data/esc10}
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
    # Two numbers per fold: the model specnet keeps (the epoch with the best
    # accuracy on the held-out fold, so chosen by the test data: optimistic)
    # and the last epoch's accuracy on the same fold (no selection: the
    # unbiased estimate). Also sums the five confusion matrices.
    python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
work = Path(sys.argv[1])
kept, last, confusion = [], [], None
for k in range(1, 6):
    run = work / "runs" / f"fold{k}"
    m = json.loads((run / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    kept.append(m["accuracy"]); last.append(rows[-1]["val_accuracy"])
    confusion = np.array(m["confusion"]) if confusion is None else confusion + np.array(m["confusion"])
    classes = m["classes"]
    print(f"fold {k}: kept epoch {best['epoch'] + 1:3d} accuracy {m['accuracy']:.4f}   last epoch {rows[-1]['epoch'] + 1:3d} accuracy {rows[-1]['val_accuracy']:.4f}")
print(f"mean  : kept {np.mean(kept):.4f}   last {np.mean(last):.4f}")
(work / "summary.json").write_text(json.dumps({"kept": kept, "last": last, "mean_kept": float(np.mean(kept)),
    "mean_last": float(np.mean(last)), "classes": classes, "confusion": confusion.tolist()}, indent=2))
from specnet.plots import plot_confusion
plot_confusion(confusion, classes, work / "confusion_5folds.png", title="ESC-10, 5 folds (kept models), 400 clips")
print(f"wrote {work / 'summary.json'} and {work / 'confusion_5folds.png'}")
PY
    ;;
  final)
    specnet train "$WORK/all" --val-split 0 --config "$config" --out "$WORK/runs/all" --overwrite
    ls -l "$WORK/runs/all/model.safetensors"
    echo "to ship: cp $WORK/runs/all/model.safetensors specnet/bundled/esc10.safetensors"
    ;;
  *)
    echo "unknown stage $stage (prepare folds summary final)" >&2; exit 2
    ;;
  esac
done
