"""Every command and the Python example in README.md run, and the output README shows for
the shipped examples is what the bundled models print, so the README cannot rot.

The commands run in order, as a user would type them, in a scratch folder
holding what they name: the shipped examples, small class folders of
synthetic tones (``my_sounds/``, ``my_test_sounds/``), a fold manifest, and a
VGG weight file in torchvision's layout for the offline ImageNet example.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_class_folders, make_tone, write_audio

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUNDLED = ROOT / "specnet" / "bundled"


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    """The ``$ ...`` lines of README's console blocks, comments stripped; pip lines skipped."""
    commands = []
    for block in readme_blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ ") and not line.startswith("$ pip "):
                commands.append(line[2:].split("  #")[0].strip())
    return commands


def test_readme_opens_with_the_two_setup_commands():
    first, second = readme_blocks("console")[:2]
    assert "pip install -e ." in first and "specnet classify examples/dog.wav" in first
    assert 'pip install -e ".[test]"' in second and "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && pytest' in ci


def test_the_errors_readme_names_are_specnets():
    import specnet

    names = set(re.findall(r"`(\w+Error)`", README.read_text()))
    assert {"SpecnetError", "TrainingError", "ParameterError"} <= names
    for name in names - {"ValueError"}:
        assert issubclass(getattr(specnet, name), specnet.SpecnetError), name


DOCS = sorted(
    p.relative_to(ROOT).as_posix()
    for pattern in ("README.md", "*/README.md", "*/*/README.md")
    for p in ROOT.glob(pattern)
    if not p.relative_to(ROOT).parts[0].startswith(".")
)


@pytest.mark.parametrize("doc", DOCS)
def test_markdown_tables_end_before_the_next_paragraph(doc: str):
    """Text right under a table's last row renders as another row of the table."""
    lines = (ROOT / doc).read_text().splitlines()
    glued = [n + 2 for n, (row, after) in enumerate(zip(lines, lines[1:])) if row.startswith("|") and after.strip() and not after.startswith("|")]
    assert glued == [], f"{doc}: line(s) {glued} follow a table row without a blank line"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", work / "examples")
    counts = {"low": 8, "mid": 8, "high": 8}
    make_class_folders(work / "my_sounds", counts, seconds=0.5)
    make_class_folders(work / "my_test_sounds", {k: 3 for k in counts}, seconds=0.5)
    with open(work / "folds.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        for label in counts:
            for i, path in enumerate(sorted((work / "my_sounds" / label).glob("*.wav"))):
                writer.writerow([path.relative_to(work), label, 1 + i % 3])
    (work / "recordings").mkdir()
    make_tone(work / "recordings" / "a.wav", 440.0, 1.0, 16000)
    make_tone(work / "recordings" / "b.wav", 880.0, 1.5, 8000)
    (work / "my_voice").mkdir()  # unlabelled recordings for `specnet adapt`
    for i, freq in enumerate((220.0, 330.0, 440.0, 550.0)):
        make_tone(work / "my_voice" / f"take{i}.wav", freq, 0.6, 8000)
    (work / "more").mkdir()
    make_tone(work / "more" / "c.flac", 660.0, 1.0, 22050)
    sr = 16000
    noise = 0.05 * np.random.default_rng(0).standard_normal(20 * sr)
    write_audio(work / "field_recording.wav", noise.astype(np.float32), sr)
    # ImageNet VGG weights in torchvision's layout (trunk only: keeps the file small).
    from specnet.models import create_model

    vgg = create_model("vgg11_bn", num_classes=1000, in_chans=3, head="imagenet")
    trunk = {k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}
    weights_dir = work / "imagenet"
    weights_dir.mkdir()
    torch.save(trunk, weights_dir / "vgg11_bn-6002323d.pth")
    shutil.copy(weights_dir / "vgg11_bn-6002323d.pth", work / "vgg11_bn-6002323d.pth")
    return work


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"SPECNET_WEIGHTS_DIR": str(cwd / "imagenet"), "OMP_NUM_THREADS": "1"}
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if command.startswith("torchrun"):
        env["TMPDIR"] = str(cwd)  # its temporary folders (torchelastic_*) go with the test's
        if torch.cuda.device_count() < 2:  # its two processes on the CPU, as in CI
            env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (BUNDLED / "esc10.safetensors").exists(), reason="bundled models not built (recipes/)")
def test_every_readme_command_runs(workspace: Path):
    commands = readme_commands()
    assert len(commands) >= 12
    for command in commands:
        result = _run(command, workspace)
        assert result.returncode == 0, f"{command!r} failed:\n{result.stderr[-2000:]}"
        if "--format json" in command:
            json.loads(result.stdout)
    assert (workspace / "runs" / "mine" / "eval" / "confusion.png").stat().st_size > 0
    assert (workspace / "model.onnx").stat().st_size > 0
    assert (workspace / "dog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(workspace / "labels.csv")))
    assert {Path(r["path"]).name for r in rows} == {"a.wav", "b.wav", "c.flac"}


@pytest.mark.skipif(not (BUNDLED / "esc10.safetensors").exists(), reason="bundled models not built (recipes/)")
def test_readme_python_example_runs(workspace: Path):
    (code,) = readme_blocks("python")
    result = subprocess.run([sys.executable, "-c", code], cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # The example's last line shows what it prints: the same labels, scores to the digits shown.
    shown = code.strip().splitlines()[-1]
    assert shown.startswith("# [")
    label = re.compile(r"'label': '([^']+)'")
    assert label.findall(result.stdout) == label.findall(shown)
    scores = [float(s) for s in re.findall(r"'score': ([\d.e-]+)", result.stdout)]
    assert scores == pytest.approx([float(s) for s in re.findall(r"'score': (\d\.\d+)\.\.\.", shown)], abs=1.5e-3)


@pytest.mark.skipif(not (BUNDLED / "fsdd.safetensors").exists(), reason="bundled models not built (recipes/)")
def test_readme_embedding_sizes_and_frame_times_are_the_bundled_models():
    import specnet

    text = " ".join(README.read_text().split())  # the paragraph's numbers, whatever its line breaks
    said = re.search(r"Clip embeddings of the bundled `esc10` model have (\d+) values; frame embeddings come every ([\d.]+) s", text)
    fsdd_said = re.search(r"so its clip embeddings have \d+ x \d+ = (\d+) values; frame embeddings average the bands and keep (\d+)", text)
    centre = re.search(r"the first frame's centre, (\d+) ms for the bundled models", text)
    assert said and fsdd_said and centre
    dog, seven = ROOT / "examples" / "dog.wav", ROOT / "examples" / "seven.wav"
    esc10, fsdd = specnet.load_model("esc10"), specnet.load_model("fsdd")
    frames, seconds = esc10.embed([dog], level="frame")
    assert esc10.embed([dog]).shape == (1, int(said[1])) and frames.shape[-1] == int(said[1])
    np.testing.assert_allclose(np.diff(seconds), float(said[2]), atol=1e-6)
    assert seconds[0] == pytest.approx(int(centre[1]) / 1000)
    frames, seconds = fsdd.embed([seven], level="frame")
    assert fsdd.embed([seven]).shape == (1, int(fsdd_said[1])) and frames.shape[-1] == int(fsdd_said[2])
    assert seconds[0] == pytest.approx(int(centre[1]) / 1000)


def readme_outputs() -> dict[str, str]:
    """README's console commands that show their output: ``{command: the lines printed under it}``."""
    shown = {}
    for block in readme_blocks("console"):
        for command, output in re.findall(r"^\$ (.+)\n((?:(?!\$ ).*\n)+)", block, flags=re.M):
            shown[command.strip()] = output
    return shown


_NUMBER = re.compile(r"-?\d+\.\d+")
SHOWN_OUTPUTS = [  # README's commands whose output it shows: all on shipped files and bundled models
    "specnet classify examples/dog.wav",
    "specnet models",
    "specnet classify --model fsdd --format json --top-k 2 examples/seven.wav",
]


@pytest.mark.skipif(not (BUNDLED / "esc10.safetensors").exists(), reason="bundled models not built (recipes/)")
@pytest.mark.parametrize("command", SHOWN_OUTPUTS)
def test_readme_shows_what_the_bundled_models_print(command, workspace: Path):
    outputs = readme_outputs()
    assert set(outputs) == set(SHOWN_OUTPUTS)  # a new output block gets checked here too
    shown = outputs[command]
    result = _run(command, workspace)
    assert result.returncode == 0, result.stderr[-2000:]
    # The same text; numbers within 1.5 units of the last digit README prints, at most 1e-4 apart
    # for long ones (another BLAS may round differently).
    assert _NUMBER.sub("#", result.stdout) == _NUMBER.sub("#", shown), result.stdout
    for printed, expected in zip(_NUMBER.findall(result.stdout), _NUMBER.findall(shown)):
        decimals = len(expected.split(".")[1])
        assert abs(float(printed) - float(expected)) <= 1.5 * 10.0 ** -min(decimals, 4), (printed, expected)
