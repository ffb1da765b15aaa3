"""Shared pieces of the benchmark harness: paths, statistics, models, data, subprocesses.

Nothing here imports torch at module level, so the orchestrator (``run.py``)
stays light and its own memory and start-up never leak into a measurement.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FSDD_RECORDINGS = SHARED / "data" / "fsdd" / "recordings"
DOG_WAV = REPO / "examples" / "dog.wav"
BUNDLED = REPO / "specnet" / "bundled"

# ------------------------------------------------------------------ statistics


@dataclass
class Metric:
    """One number of the report: the median of ``samples`` (each one a complete run).

    better : "higher" or "lower" (for the target check).
    """

    name: str
    samples: list[float]
    unit: str = ""
    target: float | None = None
    better: str = "higher"
    note: str = ""
    headline: bool = True  # headline metrics go into --json; the others are context

    @property
    def value(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.better == "higher" else self.value <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value, "min": min(self.samples), "max": max(self.samples),
            "n": len(self.samples), "unit": self.unit, "target": self.target, "better": self.better,
            "met": self.met, "note": self.note, "headline": self.headline,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metric":
        return cls(d["name"], d["samples"], d.get("unit", ""), d.get("target"), d.get("better", "higher"),
                   d.get("note", ""), d.get("headline", True))


def metric_payload(metrics: Sequence[Metric]) -> str:
    """The JSON line a child process prints last (samples kept, so the parent can recompute)."""
    return json.dumps([{**m.to_dict(), "samples": m.samples} for m in metrics])


# ------------------------------------------------------------------ subprocesses


def specnet_command() -> list[str]:
    """The installed ``specnet`` entry point next to this Python, else ``python -m specnet``."""
    script = Path(sys.executable).parent / "specnet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "specnet"]


@dataclass
class RunResult:
    seconds: float
    max_rss_mb: float
    returncode: int
    stderr: str = field(repr=False, default="")


def run_timed(cmd: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True) -> RunResult:
    """Wall time and peak RSS (``wait4``'s ru_maxrss of this child alone) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    # Read stderr to the end before reaping the child, so a chatty child cannot block.
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = RunResult(seconds, usage.ru_maxrss / 1024.0, proc.returncode, err.decode("utf-8", "replace"))
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{result.stderr[-2000:]}")
    return result


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    env.pop("SPECNET_DEBUG", None)
    # What `specnet` itself sets before torch loads (see specnet/cli.py main): idle OpenMP
    # threads sleep rather than spin. The in-process benchmarks get it too, so they time
    # the code the CLI runs, under the same threading.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


# ------------------------------------------------------------------ models


def recipe_options(name: str) -> dict[str, Any]:
    """Training options of ``recipes/<name>/config.toml``, the recipe's own, without its ``[dataset]`` table."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    options = tomllib.loads((REPO / "recipes" / name / "config.toml").read_text("utf-8"))
    options.pop("dataset", None)
    return options


def model_file(name: str, tmpdir: Path) -> tuple[Path, str]:
    """``(model file, how it was obtained)``: the bundled model, else one built (untrained) from the recipe.

    Speed does not depend on the weights, so an untrained model with the
    recipe's architecture, clip length and features times the same.
    """
    bundled = BUNDLED / f"{name}.safetensors"
    if bundled.exists():
        return bundled, "bundled"
    out = tmpdir / f"{name}.safetensors"
    if not out.exists():
        from specnet.modelfile import save_model_file
        from specnet.training import build_model

        config = train_config(name)
        classes = [str(d) for d in range(10)] if name == "fsdd" else [f"class{i}" for i in range(10)]
        model = build_model(config, classes, "audio", config.clip_seconds)
        save_model_file(model, out)
    return out, "built from recipe (untrained)"


def train_config(name: str, **overrides: Any):
    from specnet.trainconfig import TrainConfig

    options = recipe_options(name)
    known = set(TrainConfig.__dataclass_fields__)
    options = {k: v for k, v in options.items() if k in known}
    options.update(overrides)
    return TrainConfig(**options)


# ------------------------------------------------------------------ data


def fsdd_files(limit: int | None = None) -> list[Path]:
    """FSDD recordings in name order; with ``limit``, an even spread over digits and speakers."""
    files = sorted(FSDD_RECORDINGS.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{FSDD_RECORDINGS}: no FSDD recordings found")
    if limit is None or limit >= len(files):
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


def write_fsdd_manifest(files: Sequence[Path], path: Path) -> Path:
    lines = ["path,label"] + [f"{f},{f.name.split('_')[0]}" for f in files]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
