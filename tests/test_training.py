"""Tests for specnet/training.py: learning synthetic data, transfer, resuming, run files, bad data."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
import itertools
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import synthetic as S
import torch
from helpers import make_tone, stop_after_epoch, write_audio
from PIL import Image
from safetensors.torch import load_file

import specnet
from specnet.augment import NO_AUGMENT
from specnet.errors import DataError, ModelFileError, ParameterError, SpecnetError, TrainingError
from specnet import runs, training
from specnet.distributed import Dist
from specnet.trainconfig import TrainConfig
from specnet.training import default_epochs, get_lr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """12 clips, 4 per class: enough to run the loop, not to learn well."""
    return S.make_audio_dataset(tmp_path_factory.mktemp("tiny") / "data", per_class=4)


@pytest.fixture(scope="module")
def four_epochs(tmp_path_factory, tiny_data):
    """An uninterrupted 4-epoch run on ``tiny_data``: the reference for determinism and resuming."""
    out = tmp_path_factory.mktemp("four") / "run"
    best = specnet.train(tiny_data, out, epochs=4, **S.FAST)
    return out, best


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    """Metrics rows minus wall-clock seconds, the one field a rerun may change."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def read_config(run: Path) -> dict:
    text = (run / "config.json").read_text()
    assert text.endswith("}\n")  # a text file, ending as one does
    return json.loads(text)


@contextmanager
def specnet_warnings():
    """Messages logged on the "specnet" logger (the CLI stops it propagating, so no caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("specnet")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------ learning


def test_learns_synthetic_audio_and_writes_the_run(audio_run):
    assert audio_run.best["accuracy"] >= 0.95
    assert audio_run.best["n"] == 6  # 2 of the 8 clips per class held out
    run = audio_run.out
    rows = metric_rows(run)
    assert [r["epoch"] for r in rows] == list(range(S.AUDIO_EPOCHS))
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"} <= set(rows[0])
    assert max(r["val_accuracy"] for r in rows) == audio_run.best["accuracy"]
    assert rows[audio_run.best["epoch"]]["val_accuracy"] == audio_run.best["accuracy"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[0]["lr"] > rows[-1]["lr"]  # cosine decay towards zero

    config = read_config(run)
    assert config["classes"] == list(S.AUDIO_CLASSES)
    assert config["input_kind"] == "audio"
    assert config["clip_seconds"] == S.CLIP_SECONDS
    assert config["data"]["train_files"] == 18 and config["data"]["val_files"] == 6
    assert config["data"]["skipped"] == 0
    assert config["data"]["class_counts"] == {name: 6 for name in S.AUDIO_CLASSES}

    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == S.AUDIO_EPOCHS - 1
    assert len(json.loads(checkpoint["history"])) == S.AUDIO_EPOCHS
    assert json.loads(checkpoint["best"])["epoch"] == audio_run.best["epoch"]
    assert {"model", "optimizer", "config"} <= set(checkpoint)

    model = specnet.load_model(audio_run.model, device="cpu")
    assert model.classes == S.AUDIO_CLASSES
    assert model.sample_rate == S.SR
    assert model.config.clip_seconds == S.CLIP_SECONDS
    assert model.config.extra["metrics"]["epoch"] == audio_run.best["epoch"]
    assert model.config.extra["metrics"]["val_accuracy"] == audio_run.best["accuracy"]
    assert (run / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert not (run / ".lock").exists()
    assert not list(run.glob(".*.tmp"))


def test_learns_synthetic_images(tmp_path):
    data = S.make_image_dataset(tmp_path / "images")
    options = {k: v for k, v in S.FAST.items() if k not in ("features", "clip_seconds")}
    best = specnet.train(data, tmp_path / "run", epochs=10, val_split=0.25, image_size=(32, 32), **options)
    assert best["accuracy"] >= 0.95
    model = specnet.load_model(tmp_path / "run" / "model.safetensors", device="cpu")
    assert model.input_kind == "image"
    assert model.classes == S.IMAGE_CLASSES
    assert model.config.image_size == (32, 32) and model.config.in_chans == 3
    probs = model.predict(str(data / "vertical" / "vertical_0.png"), top_k=3)[0]
    assert probs.predictions[0]["label"] == "vertical"
    # The same picture as an array (uint8, channels first, its own size) gets the file's scores.
    pixels = np.moveaxis(np.asarray(Image.open(data / "vertical" / "vertical_0.png").convert("RGB")), -1, 0)
    np.testing.assert_allclose(model.predict(pixels)[0].probabilities, probs.probabilities, atol=1e-5)
    clip = make_tone(tmp_path / "clip.wav", 440.0, 0.5, 16000)
    with pytest.raises(DataError, match=rf"^{clip}: an audio file, and the model \({tmp_path / 'run' / 'model.safetensors'}\) takes images$"):
        model.predict(str(clip))


def test_image_data_refuses_audio_options_and_an_audio_model_to_start_from(audio_run, tmp_path):
    data = S.make_image_dataset(tmp_path / "images", per_class=2)
    with pytest.raises(DataError, match="^the data holds image files, and features.n_mels, clip_seconds= apply to audio: leave them out$"):
        specnet.train(data, tmp_path / "r1", features={"n_mels": 40}, clip_seconds=2.0, epochs=1, num_workers=1)
    with pytest.raises(DataError, match=f"^{audio_run.model}: is an audio model, and the data holds image files$"):
        specnet.train(data, tmp_path / "r2", init=str(audio_run.model), epochs=1, num_workers=1)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_validation_folder_of_the_other_kind_is_named_as_such(tmp_path):
    # Its class names could not match the pictures' anyway: they were reported instead
    # ("classes click, hiss, tone are not in the training data").
    data = S.make_image_dataset(tmp_path / "images", per_class=2)
    val = S.make_audio_dataset(tmp_path / "sounds", per_class=1)
    with pytest.raises(DataError, match=f"^{val}: holds audio files but the training data holds image files$"):
        specnet.train(data, tmp_path / "run", val_dir=str(val), image_size=(16, 16), epochs=1, num_workers=1)
    assert not (tmp_path / "run").exists()


def test_freeze_backbone_leaves_backbone_bit_identical(audio_run, tmp_path):
    out = tmp_path / "frozen"
    specnet.train(audio_run.data, out, init=str(audio_run.model), freeze_backbone=True, epochs=2, val_split=0, **S.FAST)
    before, after = load_file(str(audio_run.model)), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    backbone = [k for k in before if k.startswith("backbone.features.")]
    assert any(k.endswith("running_mean") for k in backbone)  # buffers are checked too
    assert any(k.endswith("num_batches_tracked") for k in backbone)
    for key in backbone + ["standardize.mean", "standardize.std"]:
        assert torch.equal(before[key], after[key]), key
    head = [k for k in before if k.startswith("backbone.head.")]
    assert head and any(not torch.equal(before[k], after[k]) for k in head)
    assert read_config(out)["freeze_backbone"] is True


def test_init_fine_tunes_onto_new_classes(audio_run, tmp_path):
    data = S.make_chirp_dataset(tmp_path / "chirps")
    out = tmp_path / "chirp_run"
    # 6 epochs: at 4, whether a fresh final layer has learnt two chirps depends on its random start.
    best = specnet.train(data, out, init=str(audio_run.model), epochs=6, val_split=0.34, **S.FAST)
    model = specnet.load_model(out / "model.safetensors", device="cpu")
    assert model.classes == ("down", "up")
    assert model.config.features == specnet.load_model(audio_run.model).config.features  # the base model's front-end
    after, before = load_file(str(out / "model.safetensors")), load_file(str(audio_run.model))
    assert after["backbone.head.fc.weight"].shape[0] == 2
    assert before["backbone.head.fc.weight"].shape[0] == 3
    assert not torch.equal(after["backbone.features.0.conv1.weight"], before["backbone.features.0.conv1.weight"])
    assert best["n"] == 4 and best["accuracy"] >= 0.75


@pytest.mark.skipif(not (Path(specnet.__file__).parent / "bundled" / "fsdd.safetensors").exists(), reason="bundled models not built (recipes/)")
def test_init_takes_a_bundled_model_by_name(tmp_path, monkeypatch):
    data = S.make_chirp_dataset(tmp_path / "chirps")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fsdd").mkdir()  # a folder of that name does not hide the bundled model
    best = specnet.train(data, tmp_path / "run", init="fsdd", epochs=1, val_split=0, num_workers=1, batch_size=4)
    model = specnet.load_model(tmp_path / "run" / "model.safetensors", device="cpu")
    assert model.classes == ("down", "up") and best["epoch"] == 0
    assert model.config.features == specnet.load_model("fsdd").config.features  # the bundled model's 8 kHz front-end


def test_init_refuses_options_the_base_model_contradicts(audio_run, tmp_path):
    data = S.make_chirp_dataset(tmp_path / "chirps")
    with pytest.raises(ParameterError) as error:
        specnet.train(data, tmp_path / "run", init=str(audio_run.model), epochs=1,
                      **{**S.FAST, "arch": "vgg11", "features": {**S.FAST.get("features", {}), "n_mels": 16}})
    message = str(error.value)
    assert "init= keeps its architecture" in message and "arch= is 'vgg11' here" in message and "features.n_mels is 16 here" in message
    # The default's own name, given, is a choice too (the CLI's --arch cnn likewise).
    with pytest.raises(ParameterError, match=r"arch= is 'cnn' here and 'cnn_tiny' in the model"):
        specnet.train(data, tmp_path / "run", init=str(audio_run.model), epochs=1, **{**S.FAST, "arch": "cnn"})
    with pytest.raises(ParameterError, match=r"unknown architecture ''"):  # not the default's
        specnet.train(data, tmp_path / "run", epochs=1, **{**S.FAST, "arch": ""})
    with pytest.raises(DataError, match=r"^the data holds audio files, and image_size= applies to images: leave it out$"):
        specnet.train(data, tmp_path / "run", epochs=1, **{**S.FAST, "image_size": (64, 64)})
    assert not (tmp_path / "run").exists()
    # Nor the missing folders above the run's, which its lock made.
    with pytest.raises(DataError, match="image_size= applies to images"):
        specnet.train(data, tmp_path / "new" / "runs" / "run", epochs=1, **{**S.FAST, "image_size": (64, 64)})
    assert not (tmp_path / "new").exists()


def test_init_gives_new_classes_a_new_final_layer_even_when_as_many(audio_run, tmp_path):
    # Three new classes on a three-class model: old class i must not become new class i.
    base = specnet.load_model(audio_run.model, device="cpu")
    data = S.make_audio_dataset(tmp_path / "renamed", per_class=2)
    for old, new in zip(base.classes, ("x_" + c for c in base.classes)):
        (data / old).rename(data / new)
    out = tmp_path / "run"
    specnet.train(data, out, init=str(audio_run.model), epochs=1, **{**S.FAST, "lr": 1e-12})
    after, before = load_file(str(out / "model.safetensors")), load_file(str(audio_run.model))
    assert not torch.equal(after["backbone.head.fc.weight"], before["backbone.head.fc.weight"])
    # With lr 1e-12 the trunk is the base model's (to float precision): only the head was reset.
    torch.testing.assert_close(after["backbone.features.0.conv1.weight"], before["backbone.features.0.conv1.weight"])


# ------------------------------------------------------------------ determinism and resuming


def test_same_seed_gives_identical_metrics_and_weights(four_epochs, tiny_data, tmp_path):
    reference, best = four_epochs
    again = specnet.train(tiny_data, tmp_path / "again", epochs=4, **S.FAST)
    assert again == best
    assert without_timing(metric_rows(tmp_path / "again")) == without_timing(metric_rows(reference))
    first, second = load_file(str(reference / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_options_beside_a_config_replace_its_values(four_epochs, tiny_data, tmp_path):
    reference, best = four_epochs
    fast = {k: v for k, v in S.FAST.items() if k != "quiet"}
    base = TrainConfig(epochs=1, **{**fast, "lr": 0.5})  # its epochs and lr give way to the options
    again = specnet.train(tiny_data, tmp_path / "again", config=base, epochs=4, lr=fast["lr"], quiet=True)
    assert again == best and len(metric_rows(tmp_path / "again")) == 4
    with pytest.raises(ParameterError, match="unknown training option.* epoch;"):
        specnet.train(tiny_data, tmp_path / "typo", config=base, epoch=4)
    assert not (tmp_path / "typo").exists()
    # The command line's --sample-rate and --time-stretch are table entries in Python: said so.
    with pytest.raises(ParameterError, match=r"^unknown training options sample_rate, time_stretch \(sample_rate goes in "
                                             r"features=\{'sample_rate': \.\.\.\}; time_stretch goes in augment_args="
                                             r"\{'time_stretch': \.\.\.\}\); known: amp, arch, "):
        specnet.train(tiny_data, tmp_path / "typo", sample_rate=8000, time_stretch=0.1)


def test_other_seed_gives_other_metrics(four_epochs, tiny_data, tmp_path):
    reference, _ = four_epochs
    specnet.train(tiny_data, tmp_path / "other", epochs=4, **{**S.FAST, "seed": 1})
    assert [r["train_loss"] for r in metric_rows(tmp_path / "other")] != [r["train_loss"] for r in metric_rows(reference)]


def test_resume_after_interruption_matches_uninterrupted_run(four_epochs, tiny_data, tmp_path):
    reference, best = four_epochs
    out = tmp_path / "interrupted"
    seen = []

    def stop_after_second_epoch(row, model):
        seen.append((row["epoch"], type(model).__name__))
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        specnet.train(tiny_data, out, epochs=4, on_epoch_end=stop_after_second_epoch, **S.FAST)
    assert seen == [(0, "SpecNet"), (1, "SpecNet")]
    assert len(metric_rows(out)) == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / ".lock").exists()

    with pytest.raises(SpecnetError, match="resume=True"):  # the run is there: neither resumed nor overwritten
        specnet.train(tiny_data, out, epochs=4, **S.FAST)
    # No --epochs on resume: the run keeps its own 4, not the default for this data (300).
    resumed = specnet.train(tiny_data, out, resume=True, **S.FAST)

    assert resumed.keys() == best.keys()
    for key in best:
        assert resumed[key] == pytest.approx(best[key], abs=1e-6), key
    rows, expected = without_timing(metric_rows(out)), without_timing(metric_rows(reference))
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want, abs=1e-6)
    final = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    final_ref = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    for key, value in final_ref.items():
        torch.testing.assert_close(final[key], value, atol=1e-6, rtol=0, msg=key)
    kept, kept_ref = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    for key, value in kept_ref.items():
        torch.testing.assert_close(kept[key], value, atol=1e-6, rtol=0, msg=key)
    assert (out / "curves.png").read_bytes().startswith(PNG_MAGIC)


def test_resume_with_nothing_but_the_run_folder_takes_the_runs_own_data_and_options(tiny_data, tmp_path, monkeypatch):
    # A manifest named by a relative path, from the folder the run started in.
    rows = [f"{p.relative_to(tiny_data)},{p.parent.name},{int(p.stem[-1]) % 2}" for p in sorted(tiny_data.rglob("*.wav"))]
    (tmp_path / "start").mkdir()
    monkeypatch.chdir(tmp_path / "start")
    Path("data").symlink_to(tiny_data, target_is_directory=True)
    Path("m.csv").write_text("path,label,fold\n" + "\n".join(f"data/{row}" for row in rows) + "\n")
    options = {**S.FAST, "features": {**S.FAST["features"], "n_mels": 12}, "keep": "last"}

    with pytest.raises(KeyboardInterrupt):
        specnet.train(None, "run", manifest="m.csv", val_fold=1, epochs=3, on_epoch_end=stop_after_epoch(0), **options)
    specnet.train(None, "whole", manifest="m.csv", val_fold=1, epochs=3, **options)
    saved = runs.run_options("run")
    assert saved["data_dir"] is None and saved["manifest"] == str(tmp_path / "start" / "m.csv")
    assert saved["val_fold"] == 1 and saved["val_split"] is None and saved["epochs"] == 3
    assert saved["features"]["n_mels"] == 12 and saved["keep"] == "last" and saved["arch"] == "cnn_tiny"

    monkeypatch.chdir(tmp_path)
    resumed = specnet.train(None, "start/run", resume=True)
    assert resumed == pytest.approx(specnet.train(None, "start/whole", resume=True, epochs=3), abs=1e-6)  # nothing left to train
    rows, expected = without_timing(metric_rows(tmp_path / "start/run")), without_timing(metric_rows(tmp_path / "start/whole"))
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    for row, want in zip(rows, expected):
        assert row == pytest.approx(want, abs=1e-6)
    assert read_config(tmp_path / "start/run")["features"]["n_mels"] == 12
    # A given option goes over the run's; one that differs from it is refused, named.
    with pytest.raises(SpecnetError, match=r"different options \(keep: 'last' then, 'best' now\); leave them out"):
        specnet.train(None, "start/run", resume=True, epochs=4, keep="best")
    # Other data given is other data: refused.
    with pytest.raises(SpecnetError, match=r"data.source: "):
        specnet.train(tiny_data, "start/run", resume=True, epochs=4, val_split=0.5)


def test_resume_alone_of_a_run_that_skipped_a_file_from_another_folder(tiny_data, tmp_path, monkeypatch):
    # The skipped files are saved as named ("data/a/empty.wav"); resume alone gives the data as a
    # real path, and the names differed: "the data have changed since" on the same data.
    data = tmp_path / "start" / "data"
    shutil.copytree(tiny_data, data)
    (data / sorted(p.name for p in data.iterdir())[0] / "empty.wav").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "start")
    with pytest.raises(KeyboardInterrupt):
        specnet.train("data", "run", epochs=2, on_epoch_end=stop_after_epoch(0), **S.FAST)
    assert read_config(tmp_path / "start/run")["data"]["skipped"] == 1
    monkeypatch.chdir(tmp_path)
    specnet.train(None, "start/run", resume=True)
    assert [row["epoch"] for row in metric_rows(tmp_path / "start/run")] == [0, 1]
    (data / sorted(p.name for p in data.iterdir())[1] / "empty.wav").write_bytes(b"")  # another file skipped: other data
    with pytest.raises(SpecnetError, match=r"data.skipped: 1 then, 2 now"):
        specnet.train(None, "start/run", resume=True, epochs=3)


def test_cpu_bfloat16_training_is_reproducible_and_saves_float32(tiny_data, tmp_path):
    runs = {}
    for name, amp in (("bf16", True), ("bf16_again", True), ("fp32", False)):
        specnet.train(tiny_data, tmp_path / name, epochs=2, **{**S.FAST, "amp": amp})
        runs[name] = load_file(str(tmp_path / name / "model.safetensors"))
    weights = [k for k in runs["fp32"] if k.endswith("conv1.weight")]
    floats = [k for k, v in runs["bf16"].items() if v.is_floating_point()]
    assert weights and floats and all(runs["bf16"][k].dtype == torch.float32 for k in floats)
    assert read_config(tmp_path / "bf16")["precision"] == "bfloat16"
    assert all(torch.equal(runs["bf16"][k], runs["bf16_again"][k]) for k in runs["bf16"])
    # bfloat16 really ran: its rounding moves the weights away from the float32 run's.
    assert any(not torch.equal(runs["bf16"][k], runs["fp32"][k]) for k in weights)


def test_weight_average_is_what_is_validated_saved_and_resumed(tiny_data, tmp_path):
    # Validate on a folder of its own (val_dir), so the validation set is known here.
    val = S.make_audio_dataset(tmp_path / "val", per_class=2)
    options = {**S.FAST, "ema_epochs": 1.0, "keep": "last", "val_dir": str(val)}
    handed = []
    reference = specnet.train(tiny_data, tmp_path / "whole", epochs=4, on_epoch_end=lambda row, m: handed.append(m), **options)
    checkpoint = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    saved = load_file(str(tmp_path / "whole" / "model.safetensors"))
    averaged = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
    key = "backbone.features.0.conv1.weight"
    assert torch.equal(saved[key], averaged[key])  # the model file holds the average ...
    assert not torch.equal(saved[key], checkpoint["model"][key])  # ... not the last step's weights
    assert torch.equal(handed[-1].state_dict()[key], saved[key])  # and so does the callback's model
    assert int(checkpoint["ema"]["n_averaged"]) == 4 * 3  # every step: 12 clips, batch 4
    # The validation row scored the average: scoring the saved file again gives its loss.
    rescored = specnet.evaluate(tmp_path / "whole" / "model.safetensors", val, device="cpu")
    assert metric_rows(tmp_path / "whole")[-1]["val_loss"] == pytest.approx(rescored["loss"], abs=1e-5)
    assert read_config(tmp_path / "whole")["precision"] == "float32"

    with pytest.raises(KeyboardInterrupt):
        specnet.train(tiny_data, tmp_path / "resumed", epochs=4, on_epoch_end=stop_after_epoch(1), **options)
    resumed = specnet.train(tiny_data, tmp_path / "resumed", epochs=4, resume=True, **options)
    assert resumed == pytest.approx(reference, abs=1e-6)
    again = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for name, value in saved.items():
        torch.testing.assert_close(again[name], value, atol=1e-6, rtol=0, msg=name)


def test_resume_reads_options_a_checkpoint_predates_as_their_defaults(four_epochs, tiny_data, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(four_epochs[0], out)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    config = json.loads(checkpoint["config"])
    for newer in ("ema_epochs", "precision"):  # options this version added
        del config[newer]
    assert config["val_split"] == 0.1  # the share the default held out
    assert read_config(out)["val_split"] == 0.1
    config["val_split"] = None  # how checkpoints wrote the default for a while
    assert config["image_size"] is None and config["arch"] == "cnn_tiny"
    config["image_size"] = [128, 128]  # an audio run's image size, as checkpoints saved the default before
    del checkpoint["spec"]  # the network, rebuilt from the options as it was started
    torch.save({**checkpoint, "config": json.dumps(config)}, out / "checkpoint.pt")
    best = specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4] and best["n"] == 3


def test_a_non_finite_number_in_the_dataset_table_is_written_as_null_and_the_run_resumes(tiny_data, tmp_path):
    # json.dumps wrote a NaN in the dataset table as bare NaN in config.json, the checkpoint and the
    # model file, which only Python reads back; and a resume then compared NaN with NaN, which differ.
    from safetensors import safe_open

    from specnet.catalog import METADATA_KEY

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    dataset = {"name": "tiny", "accuracy": float("nan"), "range": [0.5, float("inf")]}
    out = tmp_path / "run"
    specnet.train(tiny_data, out, epochs=1, dataset=dataset, **S.FAST)
    written = {"name": "tiny", "accuracy": None, "range": [0.5, None]}
    assert json.loads((out / "config.json").read_text(), parse_constant=refuse)["dataset"] == written
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert json.loads(checkpoint["config"], parse_constant=refuse)["dataset"] == written
    with safe_open(str(out / "model.safetensors"), framework="numpy") as handle:
        assert json.loads(handle.metadata()[METADATA_KEY], parse_constant=refuse)["dataset"] == written
    specnet.train(tiny_data, out, resume=True, epochs=2, dataset=dataset, **S.FAST)
    specnet.train(None, out, resume=True, epochs=3)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2]


def test_resume_past_the_asked_epochs_says_there_is_nothing_to_train(four_epochs, tiny_data, tmp_path, capsys, caplog):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, resume=True, epochs=2, **{**S.FAST, "quiet": False})
    assert "nothing to train: the run already has 4 epochs of the 2 asked for" in capsys.readouterr().out
    assert caplog.records == []  # no word about a learning rate that never runs
    assert len(metric_rows(out)) == 4
    assert (out / "config.json").read_text() == (four_epochs[0] / "config.json").read_text()  # still the run's 4 epochs


def test_patience_stops_a_run_and_a_resume_trains_on_only_with_more_patience(tiny_data, tmp_path, monkeypatch, capsys, caplog):
    # The validation scores of the first epoch, every epoch: nothing ever improves on it.
    first = []
    real = specnet.training.evaluate_split
    monkeypatch.setattr(specnet.training, "evaluate_split", lambda *a, **k: first[0] if first else first.append(real(*a, **k)) or first[0])
    out = tmp_path / "run"
    specnet.train(tiny_data, out, epochs=10, patience=2, **{**S.FAST, "quiet": False})
    assert "early stop: no improvement for 2 epochs" in capsys.readouterr().out
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2]
    config = (out / "config.json").read_text()

    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(None, out, resume=True, epochs=20, **{**S.FAST, "quiet": False})
    said = "nothing to train: no improvement in the run's last 2 epochs, where patience=2 stops it (patience=3 or more trains on)"
    assert said in capsys.readouterr().out
    assert caplog.records == []  # no word about a learning rate schedule that never runs
    assert (out / "config.json").read_text() == config and len(metric_rows(out)) == 3

    specnet.train(None, out, resume=True, patience=4)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]
    # A run that ended without improving at the end: patience given on resume stops it where it is.
    specnet.train(None, out, resume=True, epochs=12, patience=3, **{**S.FAST, "quiet": False})
    assert "no improvement in the run's last 4 epochs, where patience=3 stops it (patience=5 or more" in capsys.readouterr().out
    assert len(metric_rows(out)) == 5


def test_resume_refuses_changed_options(four_epochs, tiny_data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    with pytest.raises(SpecnetError, match="lr"):
        specnet.train(tiny_data, out, resume=True, epochs=5, **{**S.FAST, "lr": 1e-3})
    # The network is built from the options, as the run was: another one is a difference too.
    with pytest.raises(SpecnetError, match=r"\(arch: 'cnn_tiny' then, 'cnn_small' now\)"):
        specnet.train(tiny_data, out, resume=True, epochs=5, **{**S.FAST, "arch": "cnn_small"})


def test_resume_compares_settings_as_they_resolve(four_epochs, tiny_data, tmp_path):
    # A default said out loud (or left unsaid) is the same run: the check compares what the
    # settings resolve to, not how they were typed.
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    same = {**S.FAST, "features": {**S.FAST["features"], "preemphasis": 0.0, "center": True}, "mixup": 0.0}
    best = specnet.train(tiny_data, out, resume=True, epochs=5, **same)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4] and best["n"] == 3
    with pytest.raises(SpecnetError, match=r"different options \(features.preemphasis: 0.0 then, 0.5 now\); leave them out to resume with the run's own \(in .*config.json\), or pass overwrite=True to start again$"):
        specnet.train(tiny_data, out, resume=True, epochs=6, **{**S.FAST, "features": {**S.FAST["features"], "preemphasis": 0.5}})


def test_resume_refuses_other_files_in_the_same_numbers(four_epochs, tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "run"
    specnet.train(data, out, epochs=1, **S.FAST)
    first, second = sorted(p for p in data.iterdir())[:2]
    a, b = sorted(first.iterdir())[0], sorted(second.iterdir())[0]
    a.rename(second / a.name)  # two files swap classes: every count stays as it was
    b.rename(first / b.name)
    with pytest.raises(SpecnetError, match=r"was trained on other data \(data.files: which files, their classes or sizes\); the data "
                                           r"have changed since, and resuming needs the files the run was trained on, or pass "
                                           r"overwrite=True to start again$"):
        specnet.train(data, out, resume=True, epochs=2, **S.FAST)


def test_resume_comparison_sees_one_setting_however_it_is_written(tmp_path, monkeypatch):
    from specnet.runs import _comparable

    def same(saved, current):
        return _comparable(saved) == _comparable(current)

    # f_max unsaid at 8 kHz is the Nyquist frequency, 4 kHz.
    assert same({"features": {"sample_rate": 8000}}, {"features": {"sample_rate": 8000, "f_max": 4000.0}})
    assert not same({"features": {"sample_rate": 8000}}, {"features": {"sample_rate": 8000, "f_max": 3000.0}})
    # An image run from init saved the default image size before it saved the model's.
    assert same({"init": "m", "input_kind": "image", "image_size": [128, 128]}, {"init": "m", "input_kind": "image", "image_size": [224, 224]})
    assert not same({"input_kind": "image", "image_size": [128, 128]}, {"input_kind": "image", "image_size": [224, 224]})
    # init and weights files by their real path; a bundled name as it is.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "base.safetensors").write_bytes(b"x")
    assert same({"init": "cfg/base.safetensors"}, {"init": "./cfg/../cfg/base.safetensors"})
    assert not same({"init": "fsdd"}, {"init": "esc10"})


def _damaged(checkpoint: dict) -> list[tuple[str, dict]]:
    """Loadable checkpoints that are not whole: an entry gone, of another type, or not fitting the model."""
    weights = checkpoint["model"]
    first = next(k for k, v in weights.items() if v.dim() > 1)
    return [
        ("no config", {k: v for k, v in checkpoint.items() if k != "config"}),
        ("config not JSON", {**checkpoint, "config": "{not json"}),
        ("config without data", {**checkpoint, "config": "{}"}),
        ("epoch a string", {**checkpoint, "epoch": "3"}),
        ("model weights of another shape", {**checkpoint, "model": {**weights, first: weights[first][:1]}}),
        ("history not JSON", {**checkpoint, "history": "["}),
    ]


def test_resume_from_a_damaged_checkpoint_is_one_line_naming_it(four_epochs, tiny_data, tmp_path):
    checkpoint = torch.load(four_epochs[0] / "checkpoint.pt", weights_only=True)
    for what, damaged in [("a list", [1, 2]), *_damaged(checkpoint)]:
        out = tmp_path / what.replace(" ", "_")
        shutil.copytree(four_epochs[0], out)
        torch.save(damaged, out / "checkpoint.pt")
        with pytest.raises(ModelFileError) as err:
            specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)
        text = str(err.value)
        assert text.startswith(f"{out / 'checkpoint.pt'}: ") and "overwrite=True" in text and "\n" not in text, (what, text)
        assert "\\n" not in text and "\\t" not in text, (what, text)  # torch's layout, not escaped into the line
        assert len(metric_rows(out)) == 4, what  # the run as it was


class NanGradients:
    """``torch.nn.functional`` whose training loss keeps its value but has NaN gradients on chosen steps.

    sqrt'(0) is infinite and inf * 0 is NaN: adding sqrt(0 * sum(logits)) changes no
    loss value and makes every gradient NaN, as a faulty kernel can.
    """

    def __init__(self, steps):
        self.steps, self.calls = steps, 0
        self.seen: list[tuple[float, int, bool]] = []  # every training step's (loss, batch size, poisoned)

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, logits, *args, **kwargs):
        loss = torch.nn.functional.cross_entropy(logits, *args, **kwargs)
        if torch.is_grad_enabled():  # a training step, not validation
            self.calls += 1
            poisoned = self.steps == "all" or self.calls in self.steps
            self.seen.append((loss.item(), len(logits), poisoned))
            if poisoned:
                loss = loss + torch.sqrt(logits.sum() * 0)
        return loss



class InfiniteLoss(NanGradients):
    """``torch.nn.functional`` whose training loss is infinite on chosen steps."""

    def cross_entropy(self, logits, *args, **kwargs):
        loss = torch.nn.functional.cross_entropy(logits, *args, **kwargs)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.steps:
                loss = loss + logits.sum() * math.inf
        return loss


def test_a_step_with_nan_gradients_is_skipped_and_reported(tiny_data, tmp_path, monkeypatch):
    functional = NanGradients({2, 5})
    monkeypatch.setattr("specnet.training.F", functional)
    with specnet_warnings() as warnings:
        specnet.train(tiny_data, tmp_path / "run", epochs=3, **S.FAST)
    rows = metric_rows(tmp_path / "run")
    assert sum(r.get("skipped_steps", 0) for r in rows) == 2
    # An epoch's training loss is the mean over the items of the steps applied, the skipped ones left out.
    per_epoch = len(functional.seen) // 3
    for epoch, row in enumerate(rows):
        steps = [(loss, n) for loss, n, poisoned in functional.seen[epoch * per_epoch : (epoch + 1) * per_epoch] if not poisoned]
        assert row["train_loss"] == pytest.approx(sum(loss * n for loss, n in steps) / sum(n for _, n in steps), rel=1e-6)
    assert warnings.count("epoch 1: skipped 1 step with a non-finite loss or gradient") == 1
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in rows)
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_training_that_diverges_stops_with_one_line_and_saves_no_nan(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("specnet.training.F", NanGradients("all"))
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as err:
        specnet.train(tiny_data, out, epochs=6, **{**S.FAST, "batch_size": 3})  # 9 clips, 3 steps an epoch: the 10th is in epoch 4
    text = str(err.value)
    assert text.startswith("training diverged in epoch 4: 10 steps in a row had a non-finite loss or gradient")
    assert "try a lower lr=, or amp=False" in text and "\n" not in text
    # What was saved before it stopped is the untouched start, never NaN.
    weights = load_file(str(out / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_skipped_step_leaves_the_batch_norm_statistics_as_they_were(tiny_data, tmp_path, monkeypatch):
    # An infinite input (as a float16 overflow gives) poisons the running statistics in the forward pass.
    from specnet import augment

    calls = []

    def spec_augment(images, *args):
        calls.append(1)
        if len(calls) == 2:
            images = images.clone()
            images[0, 0, 0, 0] = float("inf")
        return images

    monkeypatch.setattr(augment, "spec_augment", spec_augment)
    specnet.train(tiny_data, tmp_path / "run", epochs=2, **S.FAST)
    rows = metric_rows(tmp_path / "run")
    assert sum(r.get("skipped_steps", 0) for r in rows) == 1 and all(np.isfinite(r["val_loss"]) for r in rows)
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_time_warp_bends_each_training_batch_and_is_saved(tiny_data, tmp_path, monkeypatch):
    from specnet import augment

    real, bent = augment.random_time_warp, []

    def random_time_warp(logmel, time_warp, generator):
        out = real(logmel, time_warp, generator)
        bent.append((time_warp, (out - logmel).abs().max().item()))
        return out

    monkeypatch.setattr(augment, "random_time_warp", random_time_warp)
    options = {**S.FAST, "augment": True}
    specnet.train(tiny_data, tmp_path / "run", epochs=1, augment_args={"time_warp": 0.1}, **options)
    assert bent and all(setting == 0.1 and change > 1.0 for setting, change in bent)  # in dB: really bent
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment_args"] == {"time_warp": 0.1}
    bent.clear()
    specnet.train(tiny_data, tmp_path / "plain", epochs=1, **options)
    assert bent and all(setting == 0.0 and change == 0.0 for setting, change in bent)  # off by default


def test_all_sum_reduces_in_place_on_the_ranks_device(monkeypatch):
    # NCCL reduces CUDA tensors only: the sums of losses and confusion matrices are moved to the
    # rank's device for the reduction and written back where they were (evaluate_split uses them in place).
    reduced_on = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: reduced_on.append(t.device) or t.mul_(2))
    confusion = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert Dist(0, 2, device=torch.device("cpu")).all_sum(confusion) is confusion
    assert confusion.tolist() == [[2.0, 4.0]] and reduced_on == [torch.device("cpu")]
    assert Dist().all_sum(confusion).tolist() == [[2.0, 4.0]]  # one process: nothing to reduce


def test_float16_loss_scaling_counts_its_skipped_steps_and_stops_a_diverged_run(tiny_data, tmp_path, monkeypatch):
    # GradScaler skips every step with a NaN gradient itself, halving its scale: the first 16 take it
    # from 65,536 down to 1, its settling; from there ten more in a row stop the run (3 steps an
    # epoch: the 26th step is in epoch 9).
    threes = {**S.FAST, "batch_size": 3}  # 9 training clips: 3 steps an epoch
    real = torch.amp.GradScaler
    scalers = []
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: scalers.append(real("cpu", enabled=True)) or scalers[-1])
    monkeypatch.setattr("specnet.training.F", NanGradients("all"))
    with pytest.raises(TrainingError, match="^training diverged in epoch 9: 10 steps in a row"):
        specnet.train(tiny_data, tmp_path / "run", epochs=12, **threes)
    # Now and then, an overflow (a finite loss, a non-finite gradient) is the scaler settling: it lowers
    # its scale and the run goes on. Counted in metrics.jsonl apart, with no warning; a non-finite loss warns.
    monkeypatch.setattr("specnet.training.F", NanGradients({1, 2, 7}))
    with specnet_warnings() as warnings:
        specnet.train(tiny_data, tmp_path / "settles", epochs=3, **threes)
    rows = metric_rows(tmp_path / "settles")
    assert [r.get("loss_scaler_skips", 0) for r in rows] == [2, 0, 1] and not any("skipped_steps" in r for r in rows)
    assert warnings == [] and scalers[-1].get_scale() == 65536.0 / 2**3
    monkeypatch.setattr("specnet.training.F", InfiniteLoss({4}))
    with specnet_warnings() as warnings:
        specnet.train(tiny_data, tmp_path / "inf", epochs=2, **threes)
    rows = metric_rows(tmp_path / "inf")
    assert [r.get("skipped_steps", 0) for r in rows] == [0, 1] and not any("loss_scaler_skips" in r for r in rows)
    assert warnings == ["epoch 2: skipped 1 step with a non-finite loss or gradient"]


def test_resume_refuses_other_data(four_epochs, tiny_data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)  # the same classes and counts, another folder
    # Another folder is named as such, not with every count that differs, and not as an option.
    with pytest.raises(SpecnetError, match=rf"checkpoint.pt: was trained on other data \(data.source: '{tiny_data}' then, '{other}' now\); "):
        specnet.train(other, out, resume=True, epochs=5, **S.FAST)
    # The same folder by another name (a link to it) is the same data.
    (tmp_path / "alias").symlink_to(tiny_data, target_is_directory=True)
    specnet.train(tmp_path / "alias", out, resume=True, epochs=5, **S.FAST)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]
    # The model file keeps counts, not this machine's paths.
    assert set(specnet.load_model(out / "model.safetensors").config.extra["training"]["data"]) == {
        "train_files", "val_files", "skipped", "class_counts"}


def test_resume_reads_a_validation_folder_and_manifest_however_spelled(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_data, "val")
    specnet.train(tiny_data, "run", val_dir="val", epochs=1, **S.FAST)
    specnet.train(tiny_data, "run", val_dir=f"../{tmp_path.name}/./val", resume=True, epochs=2, **S.FAST)
    assert len(metric_rows(Path("run"))) == 2
    shutil.copytree("val", "other_val")
    with pytest.raises(SpecnetError, match=r"was trained on other data \(data.files: which files, their classes or sizes; data.val_source: '\S+/val' then, '\S+/other_val' now\)"):
        specnet.train(tiny_data, "run", val_dir="other_val", resume=True, epochs=3, **S.FAST)
    # A checkpoint written before data.val_source is compared by the val_dir it names.
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    config = json.loads(checkpoint["config"])
    del config["data"]["val_source"]
    torch.save({**checkpoint, "config": json.dumps(config)}, "run/checkpoint.pt")
    with pytest.raises(SpecnetError, match=r"was trained on other data \(data.files: which files, their classes or sizes; data.val_source: '\S+/val' then, '\S+/other_val' now\)"):
        specnet.train(tiny_data, "run", val_dir="other_val", resume=True, epochs=3, **S.FAST)
    specnet.train(tiny_data, "run", val_dir="./val", resume=True, epochs=3, **S.FAST)
    # Left out, the validation folder is the run's own; another choice of validation data is refused.
    specnet.train(tiny_data, "run", resume=True, epochs=4, **S.FAST)
    with pytest.raises(SpecnetError, match=r"different options \(val_dir: True then, False now; val_split: None then, 0.1 now\) and was trained on other data \(.*data.val_files: 12 then, 3 now; data.val_source: '\S+/val' then, None now\)"):
        specnet.train(tiny_data, "run", resume=True, epochs=5, **{**S.FAST, "val_split": 0.1})
    rows = [f"{p.relative_to(tiny_data)},{p.parent.name},{i % 2}" for i, p in enumerate(sorted(tiny_data.rglob("*.wav")))]
    Path("data").symlink_to(tiny_data, target_is_directory=True)
    Path("m.csv").write_text("path,label,fold\n" + "\n".join(f"data/{row}" for row in rows) + "\n")
    specnet.train(None, "folds", manifest="m.csv", val_fold=0, epochs=1, **S.FAST)
    specnet.train(None, "folds", manifest=str(tmp_path / "m.csv"), val_fold=0, resume=True, epochs=2, **S.FAST)
    assert len(metric_rows(Path("folds"))) == 2


def test_resume_of_a_run_killed_in_its_first_epoch_starts_it(four_epochs, tiny_data, tmp_path, caplog):
    # Only config.json was written: nothing to resume, nothing to lose, so --resume trains.
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(four_epochs[0] / "config.json", out)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, resume=True, epochs=1, **S.FAST)
    assert len(metric_rows(out)) == 1 and (out / "checkpoint.pt").exists()
    assert [r.getMessage() for r in caplog.records] == [f"{out}: no checkpoint to resume from; starting a new run"]
    # Given nothing, it starts the run config.json describes: its 4 epochs, not this data's default.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(four_epochs[0] / "config.json", again)
    specnet.train(None, again, resume=True)
    assert without_timing(metric_rows(again)) == without_timing(metric_rows(four_epochs[0]))


def test_resume_alone_reads_the_checkpoint_when_config_json_is_damaged(four_epochs, tiny_data, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(four_epochs[0], out)
    (out / "config.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="specnet"):
        assert runs.run_options(out) == runs.run_options(four_epochs[0])
    assert [r.getMessage() for r in caplog.records] == [
        f"{out}/config.json: cannot be read as a run's options (Expecting property name enclosed in double quotes: line 1 "
        f"column 2 (char 1)); the run's options are read from {out}/checkpoint.pt"]
    specnet.train(None, out, resume=True, epochs=5)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]
    assert read_config(out)["epochs"] == 5  # written again whole

    # Neither readable: the damaged checkpoint is what stops a resume, with or without the options given.
    (out / "config.json").write_text("{")
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])
    for given in ({}, {"data_dir": tiny_data, **S.FAST}):
        with pytest.raises(ModelFileError, match=r"^\S+/checkpoint.pt: .*; pass overwrite=True to start the run again$"):
            specnet.train(given.pop("data_dir", None), out, resume=True, epochs=6, **given)
    # Without a checkpoint (a run stopped in its first epoch), the options given start it again.
    for made in out.iterdir():
        if made.name != "config.json":
            made.unlink()
    with pytest.raises(ModelFileError, match=r"^\S+/config.json: cannot be read as a run's options \(.*\); give the run's data and options to start it again$"):
        specnet.train(None, out, resume=True, epochs=6)
    specnet.train(tiny_data, out, resume=True, epochs=2, **S.FAST)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1]

    # A hand-edited value is named with the file it is in, and the checkpoint's copy is used.
    edited = tmp_path / "edited"
    shutil.copytree(four_epochs[0], edited)
    config = read_config(edited)
    for change, problem in (({"batch_size": "32"}, "batch_size='32' must be an integer >= 1"),
                            ({"val_dir": "val", "val_split": None}, "not the options of a specnet run (the data it read are not named)")):
        (edited / "config.json").write_text(json.dumps({**config, **change}))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="specnet"):
            assert runs.run_options(edited)["batch_size"] == S.FAST["batch_size"]
        assert caplog.records[0].getMessage() == f"{edited}/config.json: {problem}; the run's options are read from {edited}/checkpoint.pt"


def test_resume_alone_finds_an_init_model_named_by_a_relative_path(four_epochs, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(four_epochs[0] / "model.safetensors", "base.safetensors")

    options = {**S.FAST, "arch": None}
    with pytest.raises(KeyboardInterrupt):
        specnet.train(tiny_data, "run", init="base.safetensors", epochs=2, on_epoch_end=stop_after_epoch(0), **options)
    assert read_config(tmp_path / "run")["init"] == str(tmp_path / "base.safetensors")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    specnet.train(None, "../run", resume=True)
    assert [r["epoch"] for r in metric_rows(tmp_path / "run")] == [0, 1]


def test_an_init_model_named_from_home_is_read_and_recorded_by_its_real_path(four_epochs, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(four_epochs[0] / "model.safetensors", tmp_path / "base.safetensors")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    specnet.train(tiny_data, "run", init="~/base.safetensors", epochs=1, **{**S.FAST, "arch": None})
    assert read_config(tmp_path / "elsewhere" / "run")["init"] == str(tmp_path / "base.safetensors")


def test_a_bundled_init_name_stays_a_name_beside_a_file_so_named(tiny_data, tmp_path, monkeypatch):
    # resolve_model reads the bundled model before a file of its name: the run records what it read.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fsdd").write_bytes(b"not a model")
    options = {key: value for key, value in S.FAST.items() if key not in ("arch", "features", "clip_seconds")}
    specnet.train(tiny_data, "run", init="fsdd", epochs=1, **options)
    assert read_config(tmp_path / "run")["init"] == "fsdd"


def test_resume_alone_of_a_checkpoint_that_does_not_name_its_data_asks_for_them(four_epochs, tiny_data, tmp_path):
    # Checkpoints of earlier versions did not name the data they read: giving them resumes the run.
    out = tmp_path / "old"
    shutil.copytree(four_epochs[0], out)
    (out / "config.json").unlink()
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    config = json.loads(checkpoint["config"])
    del config["data"]["source"]
    torch.save({**checkpoint, "config": json.dumps(config)}, out / "checkpoint.pt")
    with pytest.raises(ModelFileError, match=r"checkpoint.pt: not the options of a specnet run \(the data it read are not named\); "
                                             r"give the run's data and options to resume it$"):
        specnet.train(None, out, resume=True, epochs=5)
    specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]


def test_resume_refuses_a_checkpoint_whose_record_of_epochs_is_damaged(four_epochs, tmp_path):
    # Valid JSON that is no run's record: named as a damaged checkpoint before anything is trained,
    # where a kept epoch without its number or scores stopped the run with a bare KeyError.
    out = tmp_path / "run"
    shutil.copytree(four_epochs[0], out)
    checkpoint = out / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=True)
    best = json.loads(saved["best"])
    for change, problem in (({"best": json.dumps({"x": 1})}, r'its kept epoch is not a run\'s record of one: \{"x": 1\}'),
                            ({"best": json.dumps({**best, "accuracy": None})}, "its kept epoch is not"),
                            ({"history": "{}"}, "its history is a dict, not a list of epochs")):
        torch.save({**saved, **change}, checkpoint)
        with pytest.raises(ModelFileError, match=rf"^{checkpoint}: damaged checkpoint \(ValueError: {problem}.*\); pass overwrite=True"):
            specnet.train(None, out, resume=True, epochs=5)
        assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3]  # nothing trained, nothing written
    torch.save(saved, checkpoint)
    specnet.train(None, out, resume=True, epochs=5)
    assert [r["epoch"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]


def test_resume_needs_the_init_model_no_more(four_epochs, tiny_data, tmp_path):
    # The checkpoint holds the network (the init model's architecture and front-end) and every weight.
    base = tmp_path / "base.safetensors"
    shutil.copy(four_epochs[0] / "model.safetensors", base)
    options = {**S.FAST, "init": str(base), "epochs": 3}

    with pytest.raises(KeyboardInterrupt):
        specnet.train(tiny_data, tmp_path / "run", on_epoch_end=stop_after_epoch(0), **options)
    whole = specnet.train(tiny_data, tmp_path / "whole", **options)
    base.unlink()
    # Options the init model's network contradicts are still refused, the file gone or not.
    with pytest.raises(ParameterError, match=r"arch= is 'cnn_small' here and 'cnn_tiny' in the model"):
        specnet.train(None, tmp_path / "run", resume=True, arch="cnn_small")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    saved = checkpoint.read_bytes()
    for spec, problem in (("[1, 2", "Expecting"), ('{"format_version": 1, "arch": "nope", "arch_args": {}, '
                                                     '"input_kind": "audio", "classes": ["a"]}', "")):
        torch.save({**torch.load(checkpoint, weights_only=True), "spec": spec}, checkpoint)
        with pytest.raises(ModelFileError, match=rf"^{checkpoint}: damaged checkpoint \(its spec: {problem}.*; pass overwrite=True"):
            specnet.train(None, tmp_path / "run", resume=True)
    # A checkpoint written before checkpoints held their network still needs the init model: said so.
    torch.save({key: value for key, value in torch.load(checkpoint, weights_only=True).items() if key != "spec"}, checkpoint)
    with pytest.raises(ModelFileError, match=rf"^{base}: .*; {checkpoint}, written by an earlier specnet, does not hold its network: "
                                             "put the init model back to resume, or pass overwrite=True to start the run again$"):
        specnet.train(None, tmp_path / "run", resume=True)
    checkpoint.write_bytes(saved)
    resumed = specnet.train(tiny_data, tmp_path / "run", resume=True, **options)  # the same options given again
    assert resumed == pytest.approx(whole, abs=1e-6)
    assert [r["epoch"] for r in metric_rows(tmp_path / "run")] == [0, 1, 2]
    kept, kept_whole = load_file(str(tmp_path / "run" / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    for name, value in kept_whole.items():
        torch.testing.assert_close(kept[name], value, atol=1e-6, rtol=0, msg=name)


def test_resume_alone_finds_data_in_a_folder_whose_name_is_not_utf8(tiny_data, tmp_path):
    data = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")  # as sys.argv holds it
    shutil.copytree(tiny_data, data)

    with pytest.raises(KeyboardInterrupt):
        specnet.train(data, tmp_path / "run", epochs=2, on_epoch_end=stop_after_epoch(0), **S.FAST)
    assert read_config(tmp_path / "run")["data"]["source"] == f"{tmp_path}/caf\\xe9"  # JSON text, as names are shown
    assert runs.run_options(tmp_path / "run")["data_dir"] == data
    specnet.train(None, tmp_path / "run", resume=True)
    assert [r["epoch"] for r in metric_rows(tmp_path / "run")] == [0, 1]


def test_resume_of_a_folder_that_is_not_there_warns_and_starts(tiny_data, tmp_path, caplog):
    out = tmp_path / "typo"
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, resume=True, epochs=1, **S.FAST)
    assert [r.getMessage() for r in caplog.records] == [f"{out}: no checkpoint to resume from; starting a new run"]
    assert len(metric_rows(out)) == 1


def test_resume_with_other_epochs_warns_that_the_schedule_changes(four_epochs, tiny_data, tmp_path, caplog):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)
    assert [r.getMessage() for r in caplog.records] == [
        "resuming a 4-epoch run as a 5-epoch one: the learning rate follows the new length from here, "
        "so the result is not what an uninterrupted 5-epoch run gives"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)  # its own length now: nothing to warn of
    assert caplog.records == [] and len(metric_rows(out)) == 5


def test_resume_of_a_val_dir_run_ignores_the_val_split_its_checkpoint_wrote(tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    val = S.make_audio_dataset(tmp_path / "val", per_class=1)
    out = tmp_path / "run"
    specnet.train(data, out, epochs=1, val_dir=str(val), **S.FAST)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    config = json.loads(checkpoint["config"])
    config["val_split"] = 0.3  # earlier versions kept a val_split beside val_dir, unused
    torch.save({**checkpoint, "config": json.dumps(config)}, out / "checkpoint.pt")
    specnet.train(data, out, resume=True, epochs=2, val_dir=str(val), **S.FAST)
    assert len(metric_rows(out)) == 2


def test_evaluate_split_counts_true_classes_in_rows(monkeypatch):
    from types import SimpleNamespace


    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    monkeypatch.setattr(training, "predict_split", lambda *args, **kwargs: (probs, torch.arange(3)))
    split = SimpleNamespace(targets=torch.tensor([0, 1, 1]))
    scores, loss = training.evaluate_split(SimpleNamespace(classes=["a", "b"]), split, batch_size=2, device=torch.device("cpu"))
    assert scores.confusion.tolist() == [[1, 0], [1, 1]]  # the second file, a "b", read as "a"
    assert loss == pytest.approx(-(np.log(0.9) + np.log(0.2) + np.log(0.7)) / 3)


def test_validation_scores_clips_with_silence_as_classify_does(audio_run):
    """predict_split (validation) and Model.predict agree on long clips, silent windows included."""
    from specnet.inference import load_model

    model = load_model(audio_run.model, device="cpu")
    tone = S.class_clip("tone", 3).astype(np.float32)
    clips = [
        np.concatenate([tone, np.zeros(3 * S.SR, np.float32)]),  # most windows silent: left out
        np.concatenate([np.zeros(S.SR, np.float32), S.class_clip("hiss", 4, 2.0).astype(np.float32)]),
        np.zeros(S.SR, np.float32),  # silent throughout: the mean of all its windows
        tone,  # one window
    ]
    split = training.Split(clips, torch.tensor([2, 1, 0, 2]), ["a", "b", "c", "d"])
    probs, indices = training.predict_split(model.net, split, batch_size=5, device=torch.device("cpu"))
    assert indices.tolist() == [0, 1, 2, 3]
    expected = np.stack([p.probabilities for p in model.predict(clips, sample_rate=S.SR)])
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-5, rtol=0)
    # Ranks share the items; a rank past the last item scores none.
    probs, indices = training.predict_split(model.net, split, batch_size=5, device=torch.device("cpu"), dist=Dist(1, 3))
    assert indices.tolist() == [1] and np.allclose(probs.numpy(), expected[1:2], atol=1e-5)
    probs, indices = training.predict_split(model.net, split.subset([0, 1]), batch_size=5, device=torch.device("cpu"), dist=Dist(2, 3))
    assert probs.shape == (0, len(model.classes)) and indices.tolist() == []


@pytest.mark.parametrize(("options", "message"), [
    ({"clip_seconds": 300.5}, "clip_seconds=300.5 must be at most 300 s"),
    ({"clip_seconds": -1.0}, "clip_seconds=-1.0 must be a positive number of seconds"),
    ({"image_size": (4097, 64)}, "image_size=(4097, 64) must be a (height, width) pair of positive integers, each at most 4096"),
    ({"in_chans": 65}, "in_chans=65 must be an integer in [1, 64]"),
    ({"arch_args": "x"}, "arch_args='x' must be a dict of option names and values"),
    ({"features": [("n_mels", 40)]}, "features=[('n_mels', 40)] must be a dict of option names and values"),
    ({"augment_args": {1: 2}}, "augment_args={1: 2} must be a dict of option names and values"),
    ({"augment": "no"}, "augment='no' must be True or False"),
    ({"val_fold": "2"}, "val_fold='2' must be an integer (a fold of the manifest)"),
    ({"val_fold": 2.0}, "val_fold=2.0 must be an integer (a fold of the manifest)"),
    ({"amp": 1}, "amp=1 must be True or False (or None)"),
])
def test_options_out_of_range_or_of_the_wrong_type_are_refused(options, message):
    with pytest.raises(ParameterError) as err:
        TrainConfig(**options)
    assert str(err.value) == message


def test_the_clip_holds_at_least_one_fft_window(tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=3)  # 0.5 s clips
    wide = {**S.FEATURES, "n_fft": 8192}  # 1.024 s at 8 kHz
    options = {**S.FAST, "features": wide, "epochs": 1, "val_split": 0}
    with pytest.raises(ParameterError, match=r"^clip_seconds=0.5 is shorter than one FFT window \(8192 samples = 1.024 s at 8000 Hz\)$"):
        specnet.train(data, tmp_path / "given", **options)
    specnet.train(data, tmp_path / "default", **{**options, "clip_seconds": None})
    assert specnet.load_model(tmp_path / "default" / "model.safetensors").config.clip_seconds == 1.1  # not 0.5


def test_config_json_keeps_the_names_of_skipped_files(tmp_path):
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    bad = data / S.AUDIO_CLASSES[0] / "two\nlines.wav"
    bad.write_bytes(b"not audio")
    specnet.train(data, tmp_path / "run", epochs=1, val_split=0, **S.FAST)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["skipped_files"] == [{"path": str(bad), "reason": "not a readable audio file (format not recognised)"}]


def test_resume_and_overwrite_together_are_refused(four_epochs, tiny_data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ParameterError, match="give one of them"):
        specnet.train(tiny_data, out, resume=True, overwrite=True, epochs=5, **S.FAST)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_data_folder_and_a_manifest_together_are_refused(tiny_data, tmp_path):
    manifest = tmp_path / "files.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(tiny_data.rglob("*.wav"))))
    with pytest.raises(ParameterError, match="give a data folder or a manifest, not both"):
        specnet.train(tiny_data, tmp_path / "run", manifest=str(manifest), epochs=1, **S.FAST)
    assert not (tmp_path / "run").exists()


def test_init_compares_the_frequency_f_max_stands_for():
    from specnet.featureconfig import FeatureConfig
    from specnet.modelspec import ModelSpec
    from specnet.trainconfig import init_conflicts

    base = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b"),
                     features=FeatureConfig(sample_rate=8000, f_max=None), clip_seconds=1.0)
    same = TrainConfig(features={"sample_rate": 8000, "f_max": 4000.0})  # None at 8 kHz is 4 kHz
    assert init_conflicts(same, base) == []
    lower = TrainConfig(features={"sample_rate": 8000, "f_max": 3000.0})
    assert init_conflicts(lower, base) == [("features.f_max", 3000.0, 4000.0)]


def test_resume_without_checkpoint_does_not_start_over(four_epochs, tiny_data, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    (out / "checkpoint.pt").unlink()
    model_bytes = (out / "model.safetensors").read_bytes()
    with pytest.raises(SpecnetError, match="no checkpoint.pt to resume from; pass overwrite=True"):
        specnet.train(tiny_data, out, resume=True, epochs=5, **S.FAST)
    assert (out / "model.safetensors").read_bytes() == model_bytes and len(metric_rows(out)) == 4


def test_overwrite_keeps_the_old_run_until_the_new_one_has_its_data(four_epochs, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(four_epochs[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match="folder not found"):
        specnet.train(tmp_path / "typo", out, epochs=1, overwrite=True, **S.FAST)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_class_only_in_the_validation_fold_is_named_as_such(tiny_data, tmp_path):
    classes = sorted(p.name for p in tiny_data.iterdir())
    rows = [f"{p},{p.parent.name},{2 if p.parent.name == classes[-1] else i % 2 + 1}"
            for i, p in enumerate(sorted(tiny_data.rglob("*.wav")))]
    (tmp_path / "m.csv").write_text("path,label,fold\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=rf"^training data: no file of class {classes[-1]}: the manifest lists it only in the validation fold$"):
        specnet.train(None, tmp_path / "run", manifest=tmp_path / "m.csv", val_fold=2, epochs=1, **S.FAST)


def test_a_picture_named_like_the_run_curves_is_kept(tiny_data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "curves.png").write_bytes(b"my own picture")
    with pytest.raises(SpecnetError, match=r"already holds a run \(curves.png\); pass resume=True .* or overwrite=True"):
        specnet.train(tiny_data, out, epochs=1, **S.FAST)
    assert (out / "curves.png").read_bytes() == b"my own picture"


def test_resume_without_a_checkpoint_replaces_no_file_of_the_users(tiny_data, tmp_path):
    # "already holds a run (config.json); pass resume=True ..." of a folder the user keeps their own files in:
    # with no checkpoint the resume would start a new run there, which must not replace them.
    for name, mine, problem in (("config.json", b'{"my": "settings"}', "config.json: not the options of a specnet run"),
                                ("curves.png", b"my own picture", "holds a run (curves.png) but no checkpoint.pt")):
        out = tmp_path / name
        out.mkdir()
        (out / name).write_bytes(mine)
        with pytest.raises(SpecnetError, match=rf"{re.escape(problem)}.*pass overwrite=True"):
            specnet.train(tiny_data, out, resume=True, epochs=1, **S.FAST)
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_bytes() == mine
    # Without resume, the user's config.json is not called a run either.
    with pytest.raises(SpecnetError, match=rf"^{re.escape(str(tmp_path / 'config.json' / 'config.json'))}: not the options of a specnet run; "):
        specnet.train(tiny_data, tmp_path / "config.json", epochs=1, **S.FAST)


def test_a_run_folder_inside_the_data_is_refused(tiny_data, tmp_path):
    first_class = sorted(p for p in tiny_data.iterdir())[0]
    for out, folder in [(first_class, tiny_data), (tiny_data / "runs" / "mine", tiny_data), (tiny_data, tiny_data)]:
        with pytest.raises(DataError, match=f"^{re.escape(str(out))}: inside the data folder {re.escape(str(folder))}, "):
            specnet.train(tiny_data, out, epochs=1, **S.FAST)
    val = tmp_path / "val"
    shutil.copytree(tiny_data, val)
    with pytest.raises(DataError, match="inside the data folder"):
        specnet.train(tiny_data, val / "run", val_dir=val, epochs=1, **S.FAST)
    assert not (tiny_data / "runs").exists() and not list(first_class.glob("*.safetensors"))


def test_existing_run_is_refused_unless_overwrite(four_epochs, tiny_data, tmp_path, caplog):
    reference, _ = four_epochs
    model_bytes = (reference / "model.safetensors").read_bytes()
    with pytest.raises(SpecnetError, match="already holds a run"):
        specnet.train(tiny_data, reference, epochs=1, **S.FAST)
    assert (reference / "model.safetensors").read_bytes() == model_bytes
    assert len(metric_rows(reference)) == 4

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "eval").mkdir()  # the user's evaluation of the old run, say: kept, and said to be kept
    (out / "eval" / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(tiny_data, out, epochs=1, overwrite=True, **S.FAST)
    assert len(metric_rows(out)) == 1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0
    assert (out / "eval" / "metrics.json").read_text() == "{}" and (out / "notes.txt").read_text() == "mine"
    assert f"{out}: kept eval, notes.txt, which are not the run's own files (and may be about the run replaced)" in caplog.messages


# ------------------------------------------------------------------ data


def test_unreadable_file_is_skipped_with_a_warning_and_counted(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    broken = data / "tone" / "broken.wav"
    broken.write_bytes(np.random.default_rng(0).bytes(2000))
    with specnet_warnings() as warnings:
        specnet.train(data, tmp_path / "run", epochs=1, **S.FAST)
    assert len(warnings) == 1 and "broken.wav" in warnings[0]
    config = read_config(tmp_path / "run")
    assert config["data"]["skipped"] == 1
    assert config["data"]["skipped_files"][0]["path"].endswith("broken.wav")
    assert config["data"]["train_files"] + config["data"]["val_files"] == 12


def test_class_without_usable_file_fails_before_training(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for path in (data / "hiss").iterdir():
        path.write_bytes(b"not audio at all" * 10)
    with pytest.raises(DataError, match="hiss"):
        specnet.train(data, tmp_path / "run", epochs=1, **S.FAST)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_single_class_and_empty_folders_are_data_errors(tmp_path):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    make_tone(one / "only" / "a.wav", 440.0, 0.3, S.SR)
    make_tone(one / "only" / "b.wav", 550.0, 0.3, S.SR)
    with pytest.raises(DataError, match="two classes"):
        specnet.train(one, tmp_path / "run1", epochs=1, **S.FAST)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        specnet.train(empty, tmp_path / "run2", epochs=1, **S.FAST)

    (empty / "a").mkdir()
    (empty / "b").mkdir()
    make_tone(empty / "a" / "x.wav", 440.0, 0.3, S.SR)
    with pytest.raises(DataError, match=r": class folder b holds no audio or image files \("):
        specnet.train(empty, tmp_path / "run3", epochs=1, **S.FAST)
    with pytest.raises(DataError, match="not found"):
        specnet.train(tmp_path / "missing", tmp_path / "run4", epochs=1, **S.FAST)
    assert not any((tmp_path / f"run{i}" / "model.safetensors").exists() for i in range(1, 5))


def write_manifest(data: Path, csv_path: Path) -> dict[int, int]:
    """``path,label,fold`` for every file of ``data``: each class's first file in fold 1, the
    rest in fold 0 (folds of different sizes, so a swapped fold shows); returns files per fold."""
    counts = {0: 0, 1: 0}
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        for label in sorted(p.name for p in data.iterdir()):
            for i, path in enumerate(sorted((data / label).iterdir())):
                fold = 1 if i == 0 else 0
                writer.writerow([path.relative_to(csv_path.parent).as_posix(), label, fold])
                counts[fold] += 1
    return counts


def test_manifest_with_val_fold(tiny_data, tmp_path):
    manifest = tiny_data.parent / "folds.csv"
    counts = write_manifest(tiny_data, manifest)
    best = specnet.train(None, tmp_path / "run", manifest=str(manifest), val_fold=1, epochs=1, **S.FAST)
    config = read_config(tmp_path / "run")
    assert config["data"]["train_files"] == counts[0] == 9
    assert config["data"]["val_files"] == counts[1] == 3
    assert best["n"] == 3
    with pytest.raises(DataError, match="fold 7"):
        specnet.train(None, tmp_path / "run7", manifest=str(manifest), val_fold=7, epochs=1, **S.FAST)


def test_val_dir(tiny_data, tmp_path, caplog):
    val = S.make_audio_dataset(tmp_path / "val", per_class=2, classes=("click", "tone"))
    with caplog.at_level(logging.WARNING, logger="specnet"):
        best = specnet.train(tiny_data, tmp_path / "run", val_dir=str(val), epochs=1, **S.FAST)
    # The training data's third class is trained on but never validated: said, not silently scored as absent.
    assert [r.getMessage() for r in caplog.records] == [
        "validation has no file of class 'hiss': the validation scores say nothing of it"]
    config = read_config(tmp_path / "run")
    assert config["data"]["train_files"] == 12 and config["data"]["val_files"] == 4
    assert best["n"] == 4
    assert config["val_split"] is None  # nothing held out of the training folders
    assert read_config(tmp_path / "run")["val_dir"] == str(val)
    # One class is enough (it was refused: "found only class 'tone'; at least two classes are needed", of the training data's three).
    one = S.make_audio_dataset(tmp_path / "one", per_class=2, classes=("tone",))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="specnet"):
        assert specnet.train(tiny_data, tmp_path / "run1", val_dir=str(one), epochs=1, **S.FAST)["n"] == 2
    assert [r.getMessage() for r in caplog.records] == [
        "validation has no file of classes 'click', 'hiss': the validation scores say nothing of them"]

    odd = S.make_chirp_dataset(tmp_path / "odd", per_class=1)
    with pytest.raises(DataError, match="down, up"):
        specnet.train(tiny_data, tmp_path / "run2", val_dir=str(odd), epochs=1, **S.FAST)


def test_a_class_of_one_file_is_trained_on_and_said_to_be_unvalidated(tmp_path, caplog):
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    for extra in sorted((data / "tone").iterdir())[1:]:
        extra.unlink()
    with caplog.at_level(logging.WARNING, logger="specnet"):
        specnet.train(data, tmp_path / "run", epochs=1, **S.FAST)
    assert [r.getMessage() for r in caplog.records] == [
        "validation has no file of class 'tone': the validation scores say nothing of it"]
    config = read_config(tmp_path / "run")
    assert config["data"]["class_counts"]["tone"] == 1 and config["data"]["val_files"] == 2  # one of 4 click, one of 4 hiss


def test_a_val_dir_holding_training_files_is_refused(tiny_data, tmp_path):
    # --val-dir naming the data folder itself trained and validated on the same 12 files, without a word.
    (tmp_path / "link").symlink_to(tiny_data, target_is_directory=True)
    for val_dir, shared in ((tiny_data, "12 files of the validation folder are training files too"),
                            (tmp_path / "link", "12 files of the validation folder are training files too")):
        with pytest.raises(DataError, match=rf"^{re.escape(str(val_dir))}: {shared} \(e\.g\. .*\.wav\); validation needs files"):
            specnet.train(tiny_data, tmp_path / "run", val_dir=str(val_dir), epochs=1, **S.FAST)
    # A validation class folder that links to the training one: its four files are shared.
    val = S.make_audio_dataset(tmp_path / "val", per_class=2, classes=("click", "tone"))
    shutil.rmtree(val / "click")
    (val / "click").symlink_to(tiny_data / "click", target_is_directory=True)
    with pytest.raises(DataError, match=r"4 files of the validation folder are training files too \(e\.g\. .*click"):
        specnet.train(tiny_data, tmp_path / "run", val_dir=str(val), epochs=1, **S.FAST)
    assert not (tmp_path / "run").exists()


def test_val_split_zero_trains_on_everything_and_keeps_the_last_epoch(tiny_data, tmp_path):
    best = specnet.train(tiny_data, tmp_path / "run", val_split=0, epochs=2, **S.FAST)
    assert best["epoch"] == 1 and "accuracy" not in best
    config = read_config(tmp_path / "run")
    assert config["data"]["train_files"] == 12 and config["data"]["val_files"] == 0
    rows = metric_rows(tmp_path / "run")
    assert len(rows) == 2 and not any("val_accuracy" in r for r in rows)
    assert specnet.load_model(tmp_path / "run" / "model.safetensors").config.extra["metrics"]["epoch"] == 1
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(PNG_MAGIC)


def test_training_leaves_the_callers_random_stream_as_it_was(tiny_data, tmp_path):
    torch.manual_seed(12345)
    expected = torch.rand(3)
    torch.manual_seed(12345)
    specnet.train(tiny_data, tmp_path / "run", val_split=0, epochs=1, **S.FAST)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(12345)
    with pytest.raises(DataError):
        specnet.train(tmp_path / "run", tmp_path / "other", epochs=1, **S.FAST)  # no class folders there
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ options and helpers


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": 2.5}, "epochs=2.5"),
        ({"epochs": True}, "epochs=True"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"clip_seconds": 0}, "clip_seconds=0"),
        ({"patience": 0}, "patience=0"),
        ({"freeze_backbone": True}, "freeze_backbone"),
        ({"ema_epochs": -1}, "ema_epochs=-1"),
        ({"ema_epochs": float("inf")}, "ema_epochs=inf"),
        ({"ema_epochs": "5"}, "ema_epochs='5'"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"batch_size": True}, "batch_size=True"),
        ({"patience": 1.5}, "patience=1.5"),
        ({"lr": "1e-3"}, "lr='1e-3'"),  # YAML reads 1e-3 as a string
        ({"lr": float("nan")}, "lr=nan"),
        ({"clip_seconds": "1"}, "clip_seconds='1'"),
        ({"weight_decay": "1e-2"}, "weight_decay='1e-2'"),
        ({"warmup_epochs": "1"}, "warmup_epochs='1'"),
        ({"grad_clip": float("nan")}, "grad_clip=nan"),
        ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
        ({"val_split": "0.1"}, "val_split='0.1'"),
        ({"seed": -1}, "seed=-1"),
        # 2**48 passed, decoded all the data, then overflowed torch.manual_seed in the first epoch
        ({"seed": 2**48}, r"^seed=281474976710656 must be an integer in \[0, 184461906879888\]$"),
        ({"num_workers": 1.5}, "num_workers=1.5"),
        ({"in_chans": 0}, "in_chans=0"),
        ({"image_size": (64,)}, r"image_size=\(64,\)"),
        ({"image_size": (64, 0)}, r"image_size=\(64, 0\)"),
        # the front-end's and augmentation's own checks, before any file is decoded
        ({"features": {"n_melz": 40}}, "unknown feature setting.*n_melz"),
        ({"features": {"sample_rate": 8000, "f_max": 8000.0}}, "f_max=8000.0"),  # given, so not lowered
        ({"patience": 3, "keep": "last"}, "patience stops at the best validation epoch"),
        ({"arch_args": {"num_classes": 3}}, "arch_args cannot set num_classes"),
        ({"arch_args": {"in_chans": 3, "include_top": False}}, "arch_args cannot set in_chans, include_top"),
        ({"init": "m.safetensors", "pretrained": True}, "give one of them"),
        ({"augment_args": {"gain": 3}}, "unknown augmentation setting.*gain"),
        ({"augment_args": {"eq_db": -1}}, "eq_db=-1"),
        ({"augment_args": {"time_warp": 0.25}}, r"time_warp=0.25 must be a finite number in \[0, 0.2\)"),
        ({"mixup": -0.5}, r"^mixup=-0.5 must be a finite number >= 0$"),  # the name given, not the setting's
        ({"device": "gpu"}, r"^device='gpu' must be auto, cpu, cuda, cuda:N or mps \(or a torch.device\)$"),
        ({"device": None}, r"^device=None must be"),  # refused here, not when train() runs
        ({"augment": False, "augment_args": {"gain": 3}}, "unknown augmentation setting.*gain"),  # checked though off
        ({"augment": False, "augment_args": {"time_warp": 0.25}}, "time_warp=0.25"),
        # one source of validation data, and patience only with one
        ({"val_dir": "v", "val_split": 0.3}, "val_dir and val_split each choose the validation data"),
        ({"val_fold": 1, "val_dir": "v"}, "val_dir and val_fold each choose"),
        ({"val_fold": 1, "val_split": 0.0}, "val_fold and val_split each choose"),
        ({"patience": 2, "val_split": 0}, "val_split=0 leaves no validation data"),
        # names of files and folders: a number was an internal TypeError when the run opened it
        ({"val_dir": 3}, r"^val_dir=3 must be a path or a name \(str or os.PathLike\), or None$"),
        ({"manifest": ["a.csv"]}, r"^manifest=\['a.csv'\] must be a path"),
        ({"init": True}, r"^init=True must be a path"),
    ],
)
def test_bad_options_are_parameter_errors(options, message):
    with pytest.raises(ParameterError, match=message):
        TrainConfig(**options)


def test_a_torch_device_is_kept_as_its_name_and_a_config_must_be_a_train_config(tmp_path):
    assert TrainConfig(device=torch.device("cuda", 1)).device == "cuda:1"  # JSON-ready, as config.json keeps it
    with pytest.raises(ParameterError, match=r"^config must be a TrainConfig, got dict \(or pass the options as keyword arguments"):
        specnet.train(tmp_path, tmp_path / "run", config={"epochs": 1})
    with pytest.raises(ParameterError, match=r"^data_dir=5 must be a folder name \(str or os.PathLike\), or None$"):
        specnet.train(5, tmp_path / "run")  # was a TypeError from os.fspath
    with pytest.raises(ParameterError, match=r"^out=None must be a folder name \(str or os.PathLike\)$"):
        specnet.train(tmp_path, None)
    assert not (tmp_path / "run").exists()


def test_augment_off_turns_every_augment_arg_off_but_a_given_mixup_still_applies():
    off = TrainConfig(augment=False, augment_args={"gain_db": 3.0, "time_warp": 0.1})
    assert off.augment_config() == NO_AUGMENT
    with_mixup = TrainConfig(augment=False, augment_args={"gain_db": 3.0}, mixup=0.4).augment_config()
    assert with_mixup == dataclasses.replace(NO_AUGMENT, mixup_alpha=0.4)


def test_front_end_defaults_follow_the_sample_rate_and_top_db_zero_turns_the_floor_off():
    low_rate = TrainConfig(features={"sample_rate": 8000}).feature_config()
    assert low_rate.f_max is None and low_rate.max_frequency == 4000  # 8 kHz audio: up to 4 kHz
    assert TrainConfig().feature_config().max_frequency == 8000  # 16 kHz: the default 8 kHz top
    plain = TrainConfig(features={"top_db": 0}).feature_config()  # what --top-db 0 means
    assert plain.top_db is None and plain.ref_peak is False
    assert TrainConfig(features={"top_db": 0, "ref_peak": True}).feature_config().ref_peak is True


def test_numpy_image_size_becomes_a_tuple_of_python_ints():
    config = TrainConfig(image_size=np.array([64, 48]))
    assert config.image_size == (64, 48) and all(type(s) is int for s in config.image_size)


def test_default_epochs_give_a_small_training_set_enough_steps():
    assert default_epochs(10) == 240  # ESC-10's 320 training clips in batches of 32: 2,400 steps
    assert default_epochs(13) == 185
    assert default_epochs(40) == 60 and default_epochs(79) == 31
    assert default_epochs(80) == 30 and default_epochs(1000) == 30  # large enough: 30 epochs
    assert default_epochs(1) == 300  # capped
    assert TrainConfig(epochs=np.int64(5)).epochs == 5  # any integer type
    assert TrainConfig(ema_epochs=np.int64(3)).ema_epochs == 3


def test_numpy_numbers_in_options_are_saved_as_plain_json_numbers():
    config = TrainConfig(epochs=np.int64(5), ema_epochs=np.int64(3), lr=np.float32(0.5),
                         augment_args={"gain_db": np.int64(6)}, arch_args={"freq_bands": np.int64(4)})
    saved = json.loads(json.dumps(config.to_dict()))  # no default=: every value is JSON-native
    assert (saved["epochs"], saved["ema_epochs"], saved["lr"]) == (5, 3, 0.5)
    assert saved["augment_args"] == {"gain_db": 6} and saved["arch_args"] == {"freq_bands": 4}
    assert type(config.augment_config().gain_db) is int


def test_unset_epochs_are_chosen_from_the_training_set_and_recorded(tiny_data, tmp_path, capsys):
    class Stop(Exception):
        pass

    def stop(row, model):
        raise Stop

    out = tmp_path / "run"
    with pytest.raises(Stop):  # one epoch is enough to see the choice
        specnet.train(tiny_data, out, on_epoch_end=stop, **{**S.FAST, "val_split": 0, "quiet": False})
    steps = -(-12 // S.FAST["batch_size"])  # 12 clips, all for training
    assert json.loads((out / "config.json").read_text())["epochs"] == default_epochs(steps) == 300
    assert "epoch   1/300" in capsys.readouterr().out


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [get_lr(step, peak=1.0, warmup_steps=4, total_steps=20) for step in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[12] == pytest.approx(0.5)
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


def test_validation_share_is_held_out_from_the_files_that_decode(tmp_path):
    # A class of one readable and one broken file: the readable one trains, whichever way the
    # seed falls. Holding out before decoding could put the good file in validation and leave
    # no training file for the class.
    data = S.make_audio_dataset(tmp_path / "data", per_class=4)
    sparse = data / S.AUDIO_CLASSES[0]
    for extra in sorted(sparse.iterdir())[1:]:
        extra.unlink()
    (sparse / "broken.wav").write_bytes(b"not audio")
    for seed in range(4):
        run = tmp_path / f"run{seed}"
        specnet.train(data, run, epochs=1, seed=seed, **S.FAST)
        counts = read_config(run)["data"]
        assert counts["skipped"] == 1
        assert counts["class_counts"][S.AUDIO_CLASSES[0]] == 1
        assert counts["train_files"] + counts["val_files"] == 9


def test_resume_differences_keep_dotted_names_and_shorten_long_values():
    from specnet.runs import _differences, _shown

    saved = {"data": {"class_counts": {"v1.0": 4, "v2": 3}}, "lr": 0.002}
    current = {"data": {"class_counts": {"v1.0": 5, "v2": 3}}, "lr": 0.002}
    assert _differences(saved, current) == [("data.class_counts.v1.0", 4, 5)]
    assert _shown([{"path": f"bad{i}.wav", "reason": "corrupt"} for i in range(5)]) == "5 entries"
    assert _shown([32, 32]) == "[32, 32]" and _shown("runs/a") == "'runs/a'"


def test_an_epoch_never_ends_on_a_batch_of_one():
    assert training.batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert training.batch_bounds(9, 4) == [(0, 4), (4, 9)]  # not (8, 9): batch norm cannot take one item
    assert training.batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert training.batch_bounds(1, 4) == [(0, 1)] and training.batch_bounds(0, 4) == []
    assert training.batch_bounds(3, 1) == [(0, 1), (1, 2), (2, 3)]  # every batch one item: nothing to merge into


def test_a_batch_norm_vgg_trains_on_small_images_whatever_the_count(tmp_path):
    # 9 images in batches of 8 left one image, on VGG-BN's 1 x 1 maps: "Expected more than 1 value per channel".
    data = S.make_image_dataset(tmp_path / "images", per_class=3, size=16)
    best = specnet.train(data, tmp_path / "run", arch="vgg11_bn", image_size=(16, 16), batch_size=8, val_split=0,
                         epochs=1, augment=False, device="cpu")
    assert best["epoch"] == 0 and math.isfinite(best["train_loss"])


def test_training_gives_cudnn_benchmark_back_as_it_found_it(tiny_data, tmp_path, monkeypatch):
    # A CUDA run turns cuDNN's kernel search on for its fixed shapes; a notebook's setting must survive it.
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for device, during in (("cuda", True), ("cpu", False)):
        seen = []
        with pytest.raises(KeyboardInterrupt), training.cudnn_autotuned(torch.device(device)):
            seen.append(torch.backends.cudnn.benchmark)
            raise KeyboardInterrupt  # given back however the run ends
        assert seen == [during] and torch.backends.cudnn.benchmark is False
    # train() runs inside it: stopped in its first epoch, the setting is the caller's again.
    with pytest.raises(KeyboardInterrupt):
        specnet.train(tiny_data, tmp_path / "run", epochs=2, on_epoch_end=stop_after_epoch(0), **{**S.FAST, "device": "auto"})
    assert torch.backends.cudnn.benchmark is False


def test_a_tie_in_accuracy_keeps_the_epoch_with_the_lower_loss(tiny_data, tmp_path, monkeypatch):
    from specnet.metrics import Scores

    losses = itertools.chain([1.0, 0.8, 0.9], itertools.repeat(0.9))

    def half_right(model, split, **kwargs):  # accuracy 0.5 every epoch, the loss from the list
        confusion = np.zeros((len(model.classes),) * 2, dtype=np.int64)
        confusion[0, 0] = confusion[0, 1] = 1
        return Scores(tuple(model.classes), confusion), next(losses)

    monkeypatch.setattr(training, "evaluate_split", half_right)
    best = specnet.train(tiny_data, tmp_path / "run", epochs=3, **S.FAST)
    assert best["epoch"] == 1 and best["loss"] == 0.8
    assert specnet.load_model(tmp_path / "run" / "model.safetensors").config.extra["metrics"]["epoch"] == 1


def test_the_validation_share_is_drawn_with_the_runs_seed():
    split = training.Split([np.zeros(10, np.float32)] * 40, torch.tensor([0, 1] * 20), [f"{i}.wav" for i in range(40)])
    held = {seed: training.hold_out(split, TrainConfig(val_split=0.25, seed=seed))[1].paths for seed in range(3)}
    assert all(len(paths) == 10 for paths in held.values())
    assert len({tuple(sorted(paths)) for paths in held.values()}) == 3  # another seed, other files
    assert training.hold_out(split, TrainConfig(val_split=0.25, seed=1))[1].paths == held[1]


def test_the_default_clip_length_is_the_90th_percentile_rounded_up_to_a_tenth():
    assert training.clip_seconds_for([0.2] * 9 + [3.0]) == 0.5  # 0.48 s: the long outlier hardly counts
    assert training.clip_seconds_for([1.21] * 10) == 1.3
    assert training.clip_seconds_for([0.01]) == 0.1 and training.clip_seconds_for([30.0]) == 10.0


def test_resuming_with_a_config_of_no_epochs_keeps_the_runs_own(four_epochs, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(four_epochs[0], run)
    options = {name: value for name, value in S.FAST.items() if name != "quiet"}  # quiet is train()'s, not the run's
    specnet.train(tiny_data, run, config=TrainConfig(**options), resume=True, quiet=True)
    assert len(metric_rows(run)) == 4  # finished: not trained on to a default length


def test_sample_rates_a_model_would_learn_the_wrong_thing_from_are_warned_about(caplog):
    from specnet.featureconfig import FeatureConfig

    at_16k = FeatureConfig(sample_rate=16000, f_max=8000.0)
    training.warn_about_sample_rates([("a", 16000), ("b", 16000), ("a", 8000)], at_16k)  # shared rates: nothing to say
    training.warn_about_sample_rates([("dog", 44100), ("cat", 48000)], at_16k)  # both heard up to 8 kHz: alike
    training.warn_about_sample_rates([("a", 8000), ("b", 8000)], FeatureConfig(sample_rate=16000, f_max=3000.0))  # 3 kHz heard
    assert caplog.records == []
    training.warn_about_sample_rates([("a", 8000), ("b", 8000)], at_16k)
    assert [r.getMessage() for r in caplog.records] == [
        "every training file is recorded at 8000 Hz or less, and the model hears up to 8000 Hz: its mel bands above 4000 Hz "
        "hold nothing; features.sample_rate=8000 suits these files"]
    caplog.clear()
    training.warn_about_sample_rates([("dog", 44100), ("dog", 16000), ("3", 8000), ("4", 8000)], at_16k)
    assert [r.getMessage() for r in caplog.records] == [
        "class '3' is recorded at 8000 Hz and class 'dog' at 16000 Hz or 44100 Hz (1 other pair too): a model can tell "
        "such classes apart by their bandwidth alone; resample the files to one rate, or make sure the classes share their sources"]


def test_training_files_at_a_lower_rate_than_the_model_are_named_once(tmp_path, caplog):
    data = tmp_path / "data"
    for label, freq in (("low", 300.0), ("high", 900.0)):
        for i in range(3):
            (data / label).mkdir(parents=True, exist_ok=True)
            make_tone(data / label / f"{i}.wav", freq + 10 * i, 0.5, S.SR // 2)
    specnet.train(data, tmp_path / "run", epochs=1, **S.FAST)
    said = [r.getMessage() for r in caplog.records if "every training file" in r.getMessage()]
    top = S.FEATURES["f_max"]  # 4000 Hz: half the model's 8000 Hz
    assert said == [f"every training file is recorded at {S.SR // 2} Hz or less, and the model hears up to {top:g} Hz: its mel "
                    f"bands above {S.SR // 4} Hz hold nothing; features.sample_rate={S.SR // 2} suits these files"]


def test_silent_training_files_are_counted_and_a_silent_class_named(tmp_path, caplog):
    training.warn_about_silence([("dog", 0.5), ("cat", 0.2)])
    assert caplog.records == []
    data = tmp_path / "data"
    for label, freq in (("tone", 440.0), ("quiet", None)):
        (data / label).mkdir(parents=True)
        for i in range(3):
            if freq is None:
                write_audio(data / label / f"{i}.wav", np.zeros(S.SR // 2, np.float32), S.SR)
            else:
                make_tone(data / label / f"{i}.wav", freq + 10 * i, 0.5, S.SR)
    write_audio(data / "tone" / "blank.wav", np.zeros(S.SR // 2, np.float32), S.SR)
    specnet.train(data, tmp_path / "run", epochs=1, val_split=0, **S.FAST)
    said = [r.getMessage() for r in caplog.records if "digital silence" in r.getMessage()]
    assert said == ["4 files of the training data are digital silence (no sample above -90 dBFS), which the model learns as "
                    "a sound of their class; class 'quiet' holds nothing else"]
    caplog.clear()  # a held-out share is not trained on: 2 of the 4 silent files are
    (data / "tone" / "blank.wav").rename(tmp_path / "blank.wav")
    write_audio(data / "quiet" / "3.wav", np.zeros(S.SR // 2, np.float32), S.SR)
    make_tone(data / "tone" / "3.wav", 470.0, 0.5, S.SR)  # 4 tones, 4 silent files, half of each held out
    specnet.train(data, tmp_path / "held_out", epochs=1, val_split=0.5, **S.FAST)
    said = [r.getMessage() for r in caplog.records if "digital silence" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("2 files of the training data are digital silence"), said


def test_the_first_line_says_how_many_epochs_and_why_so_many(tiny_data, tmp_path, monkeypatch, capsys):
    # "epoch 1/300" on a small set, with nothing saying where 300 came from.
    monkeypatch.setattr(training, "DEFAULT_EPOCHS", 2)
    monkeypatch.setattr(training, "MIN_STEPS", 12)
    options = {**S.FAST, "quiet": False}
    specnet.train(tiny_data, tmp_path / "run", **options)
    first = capsys.readouterr().out.splitlines()[0]
    steps = len(training.batch_bounds(read_config(tmp_path / "run")["data"]["train_files"], S.FAST["batch_size"]))
    assert f"; {-(-12 // steps)} epochs (a small training set: at least 12 steps in all, {steps} an epoch); " in first
    specnet.train(tiny_data, tmp_path / "given", epochs=1, **options)
    assert "; 1 epoch; " in capsys.readouterr().out.splitlines()[0]
    monkeypatch.setattr(training, "MAX_DEFAULT_EPOCHS", 3)  # capped: fewer steps than MIN_STEPS, said so
    monkeypatch.setattr(training, "MIN_STEPS", 1000)
    specnet.train(tiny_data, tmp_path / "capped", **options)
    assert f"; 3 epochs (a small training set: the most the default gives, {steps} steps an epoch); " in capsys.readouterr().out


def test_a_class_added_to_the_data_is_named_as_data_not_an_option(tiny_data, tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(tiny_data, data)
    specnet.train(data, out, epochs=1, **S.FAST)
    shutil.copytree(data / "click", data / "newcomer")
    with pytest.raises(SpecnetError) as err:
        specnet.train(data, out, resume=True, epochs=2, **S.FAST)
    text = str(err.value)
    # "was written with different options (classes: ...); leave them out": no option to leave out.
    assert "different options" not in text and "was trained on other data (" in text and "classes: [" in text
    assert "the data have changed since, and resuming needs the files the run was trained on" in text
