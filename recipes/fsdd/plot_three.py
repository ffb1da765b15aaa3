#!/usr/bin/env python3
"""Draw george_three.png: george's "three" beside jackson's and lucas's, and george's "six",
as log-mel pictures made by the bundled fsdd model's own front-end (public API only).

    python recipes/fsdd/plot_three.py [--data ../shared/data/fsdd] [--out recipes/fsdd/george_three.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import specnet  # noqa: E402

ROWS = [("3", "george"), ("3", "jackson"), ("3", "lucas"), ("6", "george")]
TAKES = (5, 12, 20, 33)  # training takes, the same four of each speaker


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=here.parents[2] / "shared" / "data" / "fsdd",
                        help="FSDD folder holding recordings/ (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=here / "george_three.png")
    args = parser.parse_args(argv)

    features = specnet.load_model("fsdd", device="cpu").config.features
    frontend = specnet.LogMelSpectrogram(features)
    pictures = {}
    for digit, speaker in ROWS:
        for take in TAKES:
            name = f"{digit}_{speaker}_{take}.wav"
            samples, _ = specnet.load_audio(args.data / "recordings" / name, sample_rate=features.sample_rate)
            with torch.no_grad():
                pictures[name] = frontend(torch.from_numpy(samples)).numpy()  # (n_mels, frames), dB
    longest = max(p.shape[1] for p in pictures.values()) * features.hop_length / features.sample_rate

    fig, axes = plt.subplots(len(ROWS), len(TAKES), figsize=(11, 7.5), sharey=True)
    for (digit, speaker), row in zip(ROWS, axes):
        for take, ax in zip(TAKES, row):
            name = f"{digit}_{speaker}_{take}.wav"
            seconds = pictures[name].shape[1] * features.hop_length / features.sample_rate
            ax.imshow(pictures[name], origin="lower", aspect="auto", cmap="magma",
                      extent=(0, seconds, 0, features.n_mels))
            ax.set_xlim(0, longest)  # one time scale for all: the length of a word is part of the picture
            ax.set_title(name, fontsize=8)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("mel band", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    fig.suptitle(
        "\"three\": george's formants are flat from the first frame (top row), jackson's and lucas's glide up;\n"
        f"george's \"six\" (bottom row) looks like his \"three\". Log-mel as the fsdd model sees it "
        f"({features.n_mels} bands, {features.top_db:g} dB floor).", fontsize=9,
    )
    fig.tight_layout()
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=80)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
