"""The models that ship in the package: they load, classify, embed, and are as good as they claim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import specnet
from specnet import hear
from specnet.cli import main
from specnet.catalog import bundled_models, metadata_document
from specnet.inference import model_metadata

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"

pytestmark = pytest.mark.skipif(
    set(bundled_models()) != {"esc10", "fsdd"}, reason="bundled models not built (see recipes/)"
)


@pytest.mark.parametrize(("model", "clip", "label"), [(None, "dog.wav", "dog"), ("fsdd", "seven.wav", "7")])
def test_example_clips_get_their_labels(model, clip, label):
    (prediction,) = specnet.load_model(model, device="cpu").predict(str(EXAMPLES / clip), top_k=3)
    assert prediction.predictions[0]["label"] == label
    assert prediction.predictions[0]["score"] > 0.5


@pytest.mark.parametrize("name", ["esc10", "fsdd"])
def test_bundled_metadata_credits_the_data(name):
    meta = model_metadata(name)
    assert metadata_document(bundled_models()[name]) == meta  # what specnet models lists without torch
    dataset = meta["dataset"]
    assert dataset["name"] == name
    assert dataset["license"] in ("CC BY 3.0", "CC BY-SA 4.0")
    assert dataset["credit"]
    assert (bundled_models()[name]).stat().st_size <= 5 * 1024 * 1024


def test_esc10_per_clip_credits_are_installed_beside_the_model():
    # The esc10 credit points to ATTRIBUTION.txt: it must be there, crediting every ESC-10 clip.
    assert "ATTRIBUTION.txt" in model_metadata("esc10")["dataset"]["credit"]
    credits = (bundled_models()["esc10"].parent / "ATTRIBUTION.txt").read_text(encoding="utf-8")
    lines = [line for line in credits.splitlines() if line.startswith("- [")]
    assert len(lines) == 400 and all("freesound.org" in line for line in lines)


@pytest.mark.skipif(not FSDD.is_dir(), reason="../shared/data/fsdd is not here")
def test_fsdd_model_reaches_the_test_accuracy_its_metadata_claims():
    test_files = sorted(p for p in FSDD.glob("*.wav") if int(p.stem.split("_")[2]) <= 4)
    assert len(test_files) == 300
    model = specnet.load_model("fsdd", device="cpu")
    predictions = model.predict([str(p) for p in test_files], top_k=1)
    correct = sum(p.predictions[0]["label"] == Path(p.path).stem.split("_")[0] for p in predictions)
    claimed = model_metadata("fsdd")["metrics"]["val_accuracy"]  # measured on these 300 files
    assert abs(correct / 300 - claimed) <= 0.005


@pytest.mark.parametrize(("name", "clip"), [("esc10", "dog.wav"), ("fsdd", "seven.wav")])
def test_every_entry_point_uses_the_bundled_models(name, clip, tmp_path, capsys):
    path = str(EXAMPLES / clip)
    model = specnet.load_model(name, device="cpu")
    clips = model.embed([path, path])
    frames, seconds = model.embed([path], level="frame")
    assert clips.shape == (2, model.net.backbone.num_features)
    assert np.allclose(clips[0], clips[1])
    assert frames.shape[0] == 1 and frames.shape[1] == len(seconds) and np.all(np.diff(seconds) > 0)

    hear_model = hear.load_model(name)
    samples, _ = specnet.load_audio(path, sample_rate=hear_model.sample_rate)
    scene = hear.get_scene_embeddings(torch.from_numpy(samples)[None], hear_model)
    assert scene.shape == (1, hear_model.scene_embedding_size)

    for argv in (["classify", "-m", name, path], ["info", name], ["models"]):
        main(argv)  # returns normally on success; errors exit non-zero
    out = capsys.readouterr().out
    assert f"model {name}" in out and "classes:" in out and "license" in out
    # info names the file, so its credits beside it can be found in any install
    shown = next(line for line in out.splitlines() if line.startswith("file:")).split(None, 1)[1]
    assert Path(shown) == specnet.bundled_models()[name] and (Path(shown).parent / "ATTRIBUTION.txt").is_file()
    main(["embed", "-m", name, path, "-o", str(tmp_path / "e.npz")])
    assert np.load(tmp_path / "e.npz")["embeddings"].shape == (1, model.net.backbone.num_features)
    main(["adapt", name, path, path, "-o", str(tmp_path / "adapted.safetensors")])  # a spread needs 2 windows
    adapted = specnet.load_model(tmp_path / "adapted.safetensors", device="cpu")
    assert adapted.config.extra["adapted"]["from"] == name and adapted.config.extra["dataset"] == model.config.extra["dataset"]
    assert adapted.classes == model.classes
