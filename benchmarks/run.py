#!/usr/bin/env python
"""Run every specnet benchmark and print a table (or, with --json, one JSON line last).

    python benchmarks/run.py            # full run: about 3.5 minutes on 2 quiet cores
    python benchmarks/run.py --quick    # smaller inputs, fewer rounds: about 70 s on 2 quiet cores
    python benchmarks/run.py --json     # ... and a last line {"metric": value, ...}
    python benchmarks/run.py --only help_seconds,classify_vs_import_torch

Every metric is a ratio against a reference measured in the same run (apart
from ``help_seconds`` and ``long_file_extra_rss_mb``), interleaved with it, so
the numbers mean something on a machine shared with other jobs. Each value is
the median over rounds; the table shows min-max and the number of rounds.
See benchmarks/README.md for what each reference includes, and the latest results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DOG_WAV,
    REPO,
    Metric,
    child_env,
    run_timed,
    specnet_command,
)

HERE = Path(__file__).resolve().parent
# The order of the report and of --json; frontend_gpu_vs_librosa appears only with CUDA.
HEADLINE = [
    "frontend_vs_librosa", "frontend_gpu_vs_librosa", "classify_vs_import_torch", "help_seconds",
    "batch_classify_vs_bare", "train_epoch_vs_bare", "long_file_extra_rss_mb",
]
# Which benchmark produces which headline metric (for --only).
GROUPS = {
    "frontend": ["frontend_vs_librosa", "frontend_gpu_vs_librosa"],
    "classify": ["classify_vs_import_torch"],
    "help": ["help_seconds"],
    "batch": ["batch_classify_vs_bare"],
    "train": ["train_epoch_vs_bare"],
    "long": ["long_file_extra_rss_mb"],
}
IMPORT_TORCH = [sys.executable, "-c", "import torch"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ child processes


def run_child(bench: str, tmp: Path, quick: bool) -> list[Metric]:
    """Run one in-process benchmark in a fresh interpreter; its last stdout line is the metrics."""
    cmd = [sys.executable, str(HERE / "_inproc.py"), bench, "--tmp", str(tmp)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=child_env(), cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {bench!r} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return [Metric.from_dict(d) for d in json.loads(lines[-1])]


def model_path(tmp: Path, name: str) -> Path:
    bundled = REPO / "specnet" / "bundled" / f"{name}.safetensors"
    return bundled if bundled.exists() else tmp / f"{name}.safetensors"


# ------------------------------------------------------------------ start-up benchmarks


def bench_help(quick: bool, tmp: Path) -> list[Metric]:
    cmd = specnet_command() + ["--help"]
    run_timed(cmd, env=child_env())  # warm the disk cache
    times = [run_timed(cmd, env=child_env()).seconds for _ in range(5 if quick else 11)]
    return [Metric("help_seconds", times, "s", 0.3, "lower", "wall time of `specnet --help` (subprocess)")]


def bench_classify(quick: bool, tmp: Path) -> list[Metric]:
    bundled = REPO / "specnet" / "bundled" / "esc10.safetensors"
    env = child_env()
    cmd = specnet_command() + ["classify", str(DOG_WAV)]
    how = "default bundled esc10"
    if not bundled.exists():
        cmd[-1:-1] = ["--model", str(model_path(tmp, "esc10"))]
        how = "esc10 recipe model built untrained, --model"
    elif run_timed(cmd, env=env, check=False).returncode != 0:
        # The bundled file is there but `specnet` cannot find it (an installation whose
        # package resources do not resolve): name the file, which does the same work.
        cmd[-1:-1] = ["--model", str(bundled)]
        how = "bundled esc10 passed as --model: the default lookup failed in this install"
    run_timed(cmd, env=env)  # warm-up: disk cache, .pyc files
    run_timed(IMPORT_TORCH, env=env)
    rounds = 4 if quick else 9
    ours, ref = [], []
    for r in range(rounds):
        pair = [("ours", cmd), ("ref", IMPORT_TORCH)]
        for kind, c in pair if r % 2 == 0 else pair[::-1]:
            (ours if kind == "ours" else ref).append(run_timed(c, env=env).seconds)
    return [
        Metric("classify_vs_import_torch", [a / b for a, b in zip(ours, ref)], "x", 1.3, "lower",
               f"`specnet classify examples/dog.wav` ({how}) / `python -c 'import torch'`"),
        Metric("classify_seconds", ours, "s", headline=False),
        Metric("import_torch_seconds", ref, "s", headline=False),
    ]


# ------------------------------------------------------------------ long file


def write_long_file(path: Path, seconds: float = 3600.0, rate: int = 16000) -> None:
    """A 1-hour 16 kHz 16-bit mono WAV written a minute at a time (noise, tones and silences)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(1)
    block = 60 * rate
    t = np.arange(block) / rate
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for i in range(int(math.ceil(seconds * rate / block))):
            n = min(block, int(seconds * rate) - i * block)
            y = 0.05 * rng.standard_normal(block) + 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)
            y[: rate * 5] *= i % 2  # a silent stretch every other minute
            f.write(y[:n].astype(np.float32))


def bench_long(quick: bool, tmp: Path) -> list[Metric]:
    long_wav = tmp / "long_1h.wav"
    if not long_wav.exists():
        write_long_file(long_wav)
    model = model_path(tmp, "esc10")
    cmd = specnet_command() + ["classify", "--model", str(model), str(long_wav)]
    frames_cmd = specnet_command() + ["embed", "--model", str(model), "--level", "frame", "--overwrite",
                                      str(long_wav), "-o", str(tmp / "long_frames.npz")]
    env = child_env()
    rounds = 1 if quick else 2
    extra, seconds, base, frames_extra = [], [], [], []
    for _ in range(rounds):
        ref = run_timed(IMPORT_TORCH, env=env)
        ours = run_timed(cmd, env=env)
        frames = run_timed(frames_cmd, env=env)
        extra.append(ours.max_rss_mb - ref.max_rss_mb)
        seconds.append(ours.seconds)
        base.append(ref.max_rss_mb)
        frames_extra.append(frames.max_rss_mb - ref.max_rss_mb)
    return [
        Metric("long_file_extra_rss_mb", extra, "MB", 200.0, "lower",
               "peak RSS of `specnet classify` on a 1-hour 16 kHz file minus that of `import torch`"),
        Metric("long_file_seconds", seconds, "s", headline=False, note="wall time of that classify run"),
        Metric("long_frames_extra_rss_mb", frames_extra, "MB", headline=False,
               note="the same for `specnet embed --level frame`: the whole file's samples and spectrogram"),
        Metric("import_torch_peak_rss_mb", base, "MB", headline=False),
    ]


# ------------------------------------------------------------------ report


def describe_machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:
        torch_version = "?"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, load average {load}; "
            f"Python {platform.python_version()}, torch {torch_version}")


def fmt(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 10000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


def print_table(metrics: list[Metric], failures: dict[str, str]) -> None:
    head = [m for m in metrics if m.headline]
    rest = [m for m in metrics if not m.headline]
    rows = [("metric", "median", "min-max", "n", "target", "ok")]
    for m in sorted(head, key=lambda m: HEADLINE.index(m.name) if m.name in HEADLINE else 99):
        target = "" if m.target is None else ("≥ " if m.better == "higher" else "≤ ") + fmt(m.target)
        ok = "" if m.met is None else ("yes" if m.met else "NO")
        rows.append((m.name, f"{fmt(m.value)} {m.unit}".strip(), f"{fmt(min(m.samples))}-{fmt(max(m.samples))}",
                     str(len(m.samples)), target, ok))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for name, reason in failures.items():
        print(f"{name}: FAILED ({reason})")
    print()
    for m in sorted(head, key=lambda m: HEADLINE.index(m.name) if m.name in HEADLINE else 99):
        if m.note:
            print(f"{m.name}: {m.note}")
    if rest:
        print("\ncontext (median, min-max):")
        for m in rest:
            note = f"  ({m.note})" if m.note else ""
            print(f"  {m.name}: {fmt(m.value)} {m.unit} [{fmt(min(m.samples))}-{fmt(max(m.samples))}]{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and fewer rounds (about 70 s on 2 quiet cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the headline metrics last")
    parser.add_argument("--only", default="", help=f"comma-separated benchmarks: {', '.join(GROUPS)}")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (models, the 1-hour file)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for name in only:
        if name not in GROUPS and not any(name in v for v in GROUPS.values()):
            parser.error(f"--only {name}: unknown (benchmarks: {', '.join(GROUPS)})")
    wanted = [g for g in GROUPS if not only or g in only or any(m in only for m in GROUPS[g])]

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="specnet-bench-"))
    log(f"specnet benchmarks ({'quick' if args.quick else 'full'}), temporary files in {tmp}")
    log(describe_machine())
    metrics: list[Metric] = []
    failures: dict[str, str] = {}
    steps = {
        "help": lambda: bench_help(args.quick, tmp),
        "classify": lambda: bench_classify(args.quick, tmp),
        "frontend": lambda: run_child("frontend", tmp, args.quick),
        "batch": lambda: run_child("batch", tmp, args.quick),
        "train": lambda: run_child("train", tmp, args.quick),
        "long": lambda: bench_long(args.quick, tmp),
    }
    try:
        if any(g in wanted for g in ("classify", "batch", "long")):
            run_child("models", tmp, args.quick)
        for group in wanted:
            t0 = time.perf_counter()
            log(f"[{group}] ...")
            try:
                metrics.extend(steps[group]())
            except Exception as exc:  # report it and go on with the others
                failures[group] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                log(f"[{group}] failed: {exc}")
            log(f"[{group}] {time.perf_counter() - t0:.1f} s")
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"# specnet benchmarks ({'quick' if args.quick else 'full'}), {time.perf_counter() - started:.0f} s")
    print(f"# {describe_machine()}")
    print_table(metrics, failures)
    if args.json:
        values = {m.name: round(m.value, 4) for m in metrics if m.headline}
        print(json.dumps({k: values[k] for k in HEADLINE if k in values}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
