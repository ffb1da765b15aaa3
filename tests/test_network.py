"""Tests for specnet/network.py: SpecNet from waveforms or images to logits and embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from specnet.errors import ParameterError
from specnet.features import LogMelSpectrogram
from specnet.featureconfig import FeatureConfig
from specnet import network
from specnet.models.layers import time_reach
from specnet.network import SpecNet
from specnet.modelspec import ModelSpec


def _audio_spec(**changes) -> ModelSpec:
    values = dict(arch="cnn_tiny", arch_args={}, input_kind="audio", classes=("a", "b", "c"),
                  features=FeatureConfig(), clip_seconds=1.0)
    return ModelSpec(**{**values, **changes})


def _net(spec: ModelSpec) -> SpecNet:
    torch.manual_seed(0)
    return SpecNet(spec).eval()


def test_audio_forward_shape_and_pipeline():
    net = _net(_audio_spec())
    x = torch.randn(4, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        logits = net(x)
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        # forward is exactly front-end -> standardise -> backbone
        images = net.images(x)
        assert images.shape == (4, 1, 64, 101)
        logmel = LogMelSpectrogram(FeatureConfig())(x)
        assert torch.equal(images[:, 0], (logmel - net.standardize.mean) / net.standardize.std)
        assert torch.equal(net.backbone(images), logits)
    assert net.classes == ("a", "b", "c")
    assert net.spec.clip_samples == 16000 and net.spec.sample_rate == 16000


def test_logits_not_probabilities():
    net = _net(_audio_spec())
    with torch.no_grad():
        net.backbone.head.fc.bias.fill_(5.0)
        logits = net(torch.randn(3, 8000) * 0.1)
    assert (logits.sum(dim=1) - 1).abs().min() > 1  # no softmax inside the model
    assert (logits > 0).all()


def test_embed_clip_level():
    net = _net(_audio_spec())
    x = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        emb = net.embed(x)
    assert emb.shape == (2, net.backbone.num_features)
    assert net.backbone.num_features == 64  # cnn_tiny's last block
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("arch, arch_args, final", [
    ("cnn_tiny", {"hidden_dim": 16, "freq_bands": 2}, lambda b: b.head.fc),
    ("vgg11", {}, lambda b: b.head.fc),
    ("vgg11", {"head": "imagenet"}, lambda b: b.classifier[6]),
])
def test_clip_embedding_is_what_the_final_layer_reads(arch, arch_args, final):
    # The embedding is the pre-logits vector: the final linear layer of it gives the logits,
    # and it depends on the whole clip, not on one corner of the feature map.
    net = _net(_audio_spec(arch=arch, arch_args=arch_args))
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        emb = net.embed(x)
        torch.testing.assert_close(final(net.backbone)(emb), net(x))
        late = x.clone()
        late[:, 12000:] = torch.randn(2, 4000, generator=torch.Generator().manual_seed(2))  # the last 0.25 s only
        assert not torch.allclose(net.embed(late), emb)


@pytest.mark.parametrize("num_samples", [16000, 8000, 12345, 3000])
def test_embed_frame_level(num_samples):
    net = _net(_audio_spec())
    frames = FeatureConfig().num_frames(num_samples)
    with torch.no_grad():
        emb = net.embed(torch.randn(2, num_samples) * 0.1, level="frame")
    stride = net.backbone.time_stride
    assert stride == 16
    assert emb.shape == (2, math.ceil(frames / stride), net.backbone.num_features)


@pytest.mark.parametrize("width", [1000, 1009])
@pytest.mark.parametrize(("arch", "in_chans"), [("cnn_tiny", 1), ("vgg11_bn", 3)])
def test_feature_map_of_a_long_input_in_pieces_is_one_pass(monkeypatch, arch, in_chans, width):
    net = _net(_audio_spec(arch=arch, in_chans=in_chans))
    images = torch.randn(2, in_chans, 64, width, generator=torch.Generator().manual_seed(1))
    calls = []
    forward_features = net.backbone.forward_features
    monkeypatch.setattr(net.backbone, "forward_features", lambda x: calls.append(x.shape[-1]) or forward_features(x))
    monkeypatch.setattr(network, "COLUMNS_PER_PIECE", 100)
    with torch.no_grad():
        pieces = net.feature_map(images)
        whole = forward_features(images)
    stride = net.backbone.time_stride
    assert pieces.shape == whole.shape and whole.shape[-1] == math.ceil(width / stride)
    assert (pieces - whole).abs().max().item() <= 1e-5 * whole.abs().max().item()
    step = 100 // stride * stride
    assert len(calls) == math.ceil(width / step) and max(calls) < width  # pieces, each with its overlap
    calls.clear()
    one_piece = step + 2 * time_reach(net.backbone.features)  # a piece and its overlaps: one pass
    with torch.no_grad():
        net.feature_map(images[..., :one_piece])
    assert calls == [one_piece]


def test_embeddings_of_a_long_recording_come_from_the_pieces(monkeypatch):
    net = _net(_audio_spec())
    x = torch.randn(1, 16000 * 3, generator=torch.Generator().manual_seed(2)) * 0.1  # 301 frames
    with torch.no_grad():
        whole = net.embed(x, level="frame"), net.embed(x, level="clip")
        monkeypatch.setattr(network, "COLUMNS_PER_PIECE", 64)
        pieces = net.embed(x, level="frame"), net.embed(x, level="clip")
    for a, b in zip(pieces, whole):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


def test_embed_unknown_level():
    net = _net(_audio_spec())
    with pytest.raises(ParameterError, match="level='frames'"):
        net.embed(torch.zeros(1, 1600), level="frames")


def test_frame_seconds():
    assert _net(_audio_spec()).frame_seconds == pytest.approx(16 * 160 / 16000)  # 0.16 s
    cfg = FeatureConfig(sample_rate=22050, n_fft=1024, hop_length=256, f_max=None)
    assert _net(_audio_spec(features=cfg)).frame_seconds == pytest.approx(16 * 256 / 22050)


@pytest.mark.parametrize("center", [True, False])
def test_frame_times_are_the_centres_of_the_frames_each_column_pools(center):
    # Column j pools frames 16j ... 16j + 15; frame t is centred on sample t * hop (+ n_fft / 2 uncentred).
    cfg = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=160, center=center)
    times = _net(_audio_spec(features=cfg)).frame_times(3)
    offset = 0 if center else 256
    expected = [(offset + 160 * (16 * j + 7.5)) / 16000 for j in range(3)]
    assert times.tolist() == pytest.approx(expected)


def test_image_kind_forward():
    spec = ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=("x", "y"), in_chans=3,
                     image_size=(32, 48))
    net = _net(spec)
    assert net.frontend is None and net.frame_seconds is None and net.spec.clip_samples is None
    assert net.standardize.mean.shape == (3, 1, 1)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        assert net(x).shape == (2, 2)
        assert net.embed(x).shape == (2, 64)
        assert net.embed(x, level="frame").shape == (2, 3, 64)  # ceil(48 / 16) columns


@pytest.mark.parametrize("input_kind, shape, hint", [
    ("audio", (16000,), "one clip is samples"), ("audio", (2, 2, 16000), "waveforms"),
    ("image", (3, 32, 48), "one image is pixels"), ("image", (2, 2, 32, 48), r"\(batch, 3, height, width\) or grey"),
])
def test_inputs_of_another_shape_are_parameter_errors(input_kind, shape, hint):
    # forward and embed met them with torch's errors: "expected input[1, 64, 64, 101] to have
    # 1 channels, but got 64 channels" for a clip without its batch axis, an IndexError for an image
    spec = _audio_spec() if input_kind == "audio" else ModelSpec(
        arch="cnn_tiny", arch_args={}, input_kind="image", classes=("x", "y"), in_chans=3, image_size=(32, 48))
    net = _net(spec)
    for run in (net, net.embed):
        with pytest.raises(ParameterError, match=hint):
            run(torch.rand(shape))


def test_grey_images_go_to_an_rgb_model_as_the_grey_repeated():
    # Standardisation repeats a single channel: refused since the shape check, which torch never was.
    net = _net(ModelSpec(arch="cnn_tiny", arch_args={}, input_kind="image", classes=("x", "y"), in_chans=3, image_size=(32, 48)))
    grey = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(grey), net(grey.expand(-1, 3, -1, -1)))
        torch.testing.assert_close(net.embed(grey), net.embed(grey.expand(-1, 3, -1, -1)))


def test_multi_channel_audio_input_repeats_the_spectrogram():
    net = _net(_audio_spec(in_chans=3))
    with torch.no_grad():
        images = net.images(torch.randn(2, 4000) * 0.1)
        assert images.shape == (2, 3, 64, 26)
        assert torch.equal(images[:, 0], images[:, 2])
        assert net(torch.randn(2, 4000)).shape == (2, 3)


def test_backward_reaches_every_parameter():
    net = SpecNet(_audio_spec()).train()
    loss = net(torch.randn(3, 4000) * 0.1).logsumexp(dim=1).mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []


def test_with_extra_adds_without_changing_the_rest():
    spec = _audio_spec()
    more = spec.with_extra(dataset="fsdd").with_extra(metrics={"accuracy": 0.9})
    assert more.extra == {"dataset": "fsdd", "metrics": {"accuracy": 0.9}}
    assert spec.extra == {}
    assert more.arch == spec.arch and more.features == spec.features


def test_bad_specs_are_parameter_errors():
    with pytest.raises(ParameterError, match="input_kind='video'"):
        SpecNet(_audio_spec(input_kind="video"))
    with pytest.raises(ParameterError, match="needs features"):
        SpecNet(_audio_spec(features=None))
    with pytest.raises(ParameterError, match="unknown architecture 'nope'"):
        SpecNet(_audio_spec(arch="nope"))


@pytest.mark.parametrize("name", sorted(network.RESERVED_ARCH_ARGS))
def test_arch_args_that_a_specnet_sets_itself_are_refused(name):
    # num_classes reached create_model twice (a raw TypeError); include_top=False refused a
    # num_classes the caller never gave
    with pytest.raises(ParameterError, match=f"arch_args may not set {name}"):
        SpecNet(_audio_spec(arch_args={name: 3}))
