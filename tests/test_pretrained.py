"""Tests for specnet/models/pretrained.py, all offline.

Weight files in torchvision's layout are made here from our own VGG with
random weights; the downloader is replaced by fakes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
from pathlib import Path

import pytest
import synthetic as S
from helpers import stop_after_epoch
import torch
from safetensors.torch import save_file

import specnet

from specnet.errors import ModelFileError, ParameterError
from specnet.models import create_model, imagenet_weights_url, load_imagenet_weights
from specnet.models import pretrained
from specnet.models.pretrained import IMAGENET_FILES, adapt_input_conv


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may find real weights or touch the network or the user's cache."""
    monkeypatch.delenv("SPECNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SPECNET_CACHE", str(tmp_path / "cache"))

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A full vgg11 ImageNet-layout file (RGB, 1000 classes) and its state dict."""
    torch.manual_seed(0)
    source = create_model("vgg11", num_classes=1000, in_chans=3, head="imagenet")
    path = tmp_path_factory.mktemp("weights") / "vgg11-xxxx.pth"
    state = source.state_dict()
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def trunk_state():
    """Only the `features.*` keys of an RGB vgg11 (small enough to write often)."""
    torch.manual_seed(1)
    return create_model("vgg11", in_chans=3, include_top=False).state_dict()


def test_urls():
    assert imagenet_weights_url("vgg16") == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert imagenet_weights_url("vgg19_bn") == "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth"
    assert set(IMAGENET_FILES) == {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    for arch, name in IMAGENET_FILES.items():
        assert name.startswith(arch + "-") and len(name.split("-")[1]) == len("397923af.pth")
    with pytest.raises(ParameterError, match="vgg16_bn"):
        imagenet_weights_url("resnet18")


def test_one_channel_adaptation(imagenet_file):
    path, state = imagenet_file
    grey = create_model("vgg11", num_classes=1000, in_chans=1, head="imagenet", weights=path)
    for key, value in state.items():
        if key != "features.0.weight":
            assert torch.equal(grey.state_dict()[key], value), key
    summed = state["features.0.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(grey.features[0].weight.detach(), summed)

    rgb = create_model("vgg11", num_classes=1000, in_chans=3, head="imagenet")
    rgb.load_state_dict(state)
    rgb.eval(), grey.eval()
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            rgb.forward_features(image.expand(-1, 3, -1, -1)), grey.forward_features(image), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(rgb(image.expand(-1, 3, -1, -1)), grey(image), rtol=1e-5, atol=1e-5)


def test_classifier_dropped_when_classes_differ(imagenet_file, caplog):
    path, state = imagenet_file
    model = create_model("vgg11", num_classes=10, head="imagenet")
    fresh_fc = model.classifier[6].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="specnet"):
        loaded = load_imagenet_weights(model, arch="vgg11", weights=path)
    assert "classifier.6.weight" not in loaded and "classifier.0.weight" in loaded
    assert len(loaded) == len(state) - 2
    assert torch.equal(model.classifier[6].weight, fresh_fc)
    assert torch.equal(model.classifier[3].weight, state["classifier.3.weight"])
    assert "classifier.6.weight" in caplog.text and "shape differs" in caplog.text
    assert {r.levelname for r in caplog.records} == {"INFO"}  # the expected new last layer: a note, not a warning


def test_global_head_keeps_trunk_only(imagenet_file, caplog):
    path, state = imagenet_file
    with caplog.at_level(logging.INFO, logger="specnet"):
        model = create_model("vgg11", num_classes=4, in_chans=3, weights=path)
    for key in (k for k in state if k.startswith("features.")):
        assert torch.equal(model.state_dict()[key], state[key])
    # One note: the file's classifier unused, the model's head fresh; nothing to warn about.
    (note,) = caplog.records
    assert note.levelname == "INFO" and note.getMessage().startswith(f"{path.name}: convolutional trunk loaded; past it, skipped 6 keys")
    assert "classifier.0.weight" in note.getMessage() and "head.fc.weight" in note.getMessage()


def test_folder_env_dir_and_safetensors(trunk_state, tmp_path, monkeypatch):
    folder = tmp_path / "offline"
    folder.mkdir()
    torch.save(trunk_state, folder / IMAGENET_FILES["vgg11"])

    by_folder = create_model("vgg11", include_top=False, weights=folder)
    monkeypatch.setenv("SPECNET_WEIGHTS_DIR", str(folder))
    by_env = create_model("vgg11", include_top=False, pretrained=True)
    expected = trunk_state["features.3.weight"]
    assert torch.equal(by_folder.features[3].weight, expected)
    assert torch.equal(by_env.features[3].weight, expected)

    st_path = tmp_path / "vgg11.safetensors"
    save_file(trunk_state, str(st_path))
    model = create_model("vgg11", include_top=False, in_chans=3)
    loaded = load_imagenet_weights(model, arch="vgg11", weights=st_path)
    assert sorted(loaded) == sorted(trunk_state)
    assert torch.equal(model.features[0].weight, trunk_state["features.0.weight"])


def test_weights_follow_the_network_the_options_build(tmp_path):
    # vgg11 with batch_norm=True is torchvision's vgg11_bn: its file, found in a folder by that name.
    torch.manual_seed(2)
    bn_trunk = create_model("vgg11_bn", in_chans=3, include_top=False).state_dict()
    folder = tmp_path / "offline"
    folder.mkdir()
    torch.save(bn_trunk, folder / IMAGENET_FILES["vgg11_bn"])
    model = create_model("vgg11", batch_norm=True, include_top=False, weights=folder)
    assert model.arch == "vgg11"  # still the registry entry it was made from
    assert torch.equal(model.features[4].weight, bn_trunk["features.4.weight"])


class _Payload:
    """Pickles as a call to open(marker, "w"): unpickling it creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(tmp_path, trunk_state):
    marker = tmp_path / "pwned"
    evil = tmp_path / "vgg11-evil.pth"
    torch.save({**trunk_state, "extra": _Payload(marker)}, evil)
    assert not marker.exists()
    model = create_model("vgg11", include_top=False)
    with pytest.raises(ModelFileError, match="not a weight file specnet can load safely .it holds more than tensors"):
        load_imagenet_weights(model, arch="vgg11", weights=evil)
    assert not marker.exists()


def test_unreadable_and_wrong_files(tmp_path):
    model = create_model("vgg11", include_top=False)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_imagenet_weights(model, arch="vgg11", weights=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a weight file")
    with pytest.raises(ModelFileError, match="junk.pth: not a weight file specnet can load safely"):
        load_imagenet_weights(model, arch="vgg11", weights=junk)
    text = tmp_path / "text.pth"
    text.write_text("hello\n")  # torch's unpickler fails with a bare KeyError on it
    with pytest.raises(ModelFileError, match=r"text.pth: not a weight file specnet can load safely .* \(.pth\) or a .safetensors file$"):
        load_imagenet_weights(model, arch="vgg11", weights=text)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ModelFileError, match="state dict"):
        load_imagenet_weights(model, arch="vgg11", weights=listing)
    unrelated = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(ModelFileError, match="no weight .* fits"):
        load_imagenet_weights(model, arch="vgg11", weights=unrelated)


def test_file_for_another_depth_is_refused(tmp_path):
    # VGG13's trunk shares its first layers' shapes with VGG11's: a partial fit is still a wrong file.
    other = tmp_path / "vgg13.safetensors"
    save_file(create_model("vgg13", in_chans=3, include_top=False).state_dict(), str(other))
    model = create_model("vgg11", include_top=False, in_chans=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFileError, match=r"vgg13\.safetensors: fills only \d+ of vgg11's 16 convolutional tensors"):
        load_imagenet_weights(model, arch="vgg11", weights=other)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing half-loaded


def test_trunk_check_counts_only_what_imagenet_files_hold(imagenet_file):
    # A PReLU between the convolutions has weights no ImageNet file holds: still a full trunk.
    path, state = imagenet_file
    model = create_model("vgg11", num_classes=4, in_chans=3, act="prelu", weights=path)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])


def test_no_file_and_no_network_is_explained():
    with pytest.raises(ModelFileError) as err:
        create_model("vgg16", include_top=False, pretrained=True)
    message = str(err.value)
    assert "pass weights=FILE" in message and "SPECNET_WEIGHTS_DIR" in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message


def test_checksum_mismatch_deletes_download(monkeypatch, tmp_path):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst)))
        with open(dst, "wb") as f:
            f.write(b"tampered bytes")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = create_model("vgg11", include_top=False)
    for _ in range(2):
        with pytest.raises(ModelFileError, match="checksum mismatch"):
            load_imagenet_weights(model, arch="vgg11", progress=False)
    assert [url for url, _ in calls] == [imagenet_weights_url("vgg11")] * 2
    # Each download has a name of its own (ranks of a multi-GPU run download at once), beside the cache's file.
    (first, second) = (dst for _, dst in calls)
    assert first != second and first.parent == second.parent == tmp_path / "cache" and first.name.endswith(".partial")
    assert list((tmp_path / "cache").iterdir()) == []


def test_good_download_is_cached(monkeypatch, tmp_path, trunk_state):
    source = tmp_path / "served.pth"
    torch.save(trunk_state, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    # Pretend torchvision published this file, so its name carries our hash.
    monkeypatch.setitem(IMAGENET_FILES, "vgg11", f"vgg11-{digest[:8]}.pth")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        with open(dst, "wb") as f:
            f.write(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    for _ in range(2):
        model = create_model("vgg11", include_top=False, pretrained=True)
        assert torch.equal(model.features[0].weight, trunk_state["features.0.weight"].sum(1, keepdim=True))
    assert calls == [f"https://download.pytorch.org/models/vgg11-{digest[:8]}.pth"]  # second run used the cache
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"vgg11-{digest[:8]}.pth"]
    assert pretrained.cache_dir() == tmp_path / "cache"


def test_adapt_input_conv_keeps_grey_response():
    weight = torch.randn(8, 3, 3, 3)
    assert adapt_input_conv(weight, 3) is weight
    for in_chans in (1, 6):
        adapted = adapt_input_conv(weight, in_chans)
        assert adapted.shape == (8, in_chans, 3, 3)
        torch.testing.assert_close(adapted.sum(dim=1), weight.sum(dim=1))
    two = adapt_input_conv(weight, 2)  # R, G scaled by 3/2
    torch.testing.assert_close(two, weight[:, :2] * 1.5)


def test_a_bad_weight_file_is_reported_before_any_file_is_decoded(tmp_path, monkeypatch):
    from specnet import training

    data = S.make_image_dataset(tmp_path / "images", per_class=2, size=8)
    (tmp_path / "random.pth").write_bytes(b"\x00" * 1000)

    def no_decoding(*args, **kwargs):
        raise AssertionError("files were decoded before the weight file was read")

    monkeypatch.setattr(training, "decode_split", no_decoding)
    with pytest.raises(ModelFileError, match=rf"^{tmp_path / 'random.pth'}"):
        specnet.train(data, tmp_path / "run", arch="vgg11", weights=str(tmp_path / "random.pth"), image_size=(32, 32), epochs=1)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("checkpoint_has_spec", [True, False], ids=["checkpoint", "older-checkpoint"])
def test_resume_needs_the_weight_file_no_more(imagenet_file, tmp_path, monkeypatch, checkpoint_has_spec):
    # The checkpoint holds every weight: a run resumes after its ImageNet file is gone, also from
    # another folder when the file was named from home (~), and from a checkpoint written before
    # checkpoints held their network's spec.
    monkeypatch.setenv("HOME", str(tmp_path))
    weights = tmp_path / "vgg11-copy.pth"
    weights.write_bytes(imagenet_file[0].read_bytes())
    data = S.make_image_dataset(tmp_path / "images", per_class=4, size=8)
    options = {"arch": "vgg11", "weights": "~/vgg11-copy.pth", "image_size": (32, 32), "epochs": 2, "batch_size": 4,
               "augment": False, "num_workers": 1, "quiet": True}

    with pytest.raises(KeyboardInterrupt):
        specnet.train(data, tmp_path / "run", on_epoch_end=stop_after_epoch(0), **options)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["weights"] == str(weights)
    if not checkpoint_has_spec:
        checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        del checkpoint["spec"]
        torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    whole = specnet.train(data, tmp_path / "whole", **options)
    weights.unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = specnet.train(None, tmp_path / "run", resume=True, quiet=True)
    assert resumed == pytest.approx(whole, abs=1e-6)
    with pytest.raises(ModelFileError, match="does not exist"):  # a new run still needs it
        specnet.train(data, tmp_path / "new", **options)
