#!/usr/bin/env bash
# Copies the two example clips that ship in examples/ from the datasets in
# ../shared/data (or DATA=/path/to/data). Run from the repository root.
set -euo pipefail
data=${DATA:-../shared/data}
cp "$data/esc10/audio/dog/1-100032-A-0.wav" examples/dog.wav
cp "$data/fsdd/recordings/7_jackson_0.wav" examples/seven.wav
