"""Tests for specnet/models: layers, CNN, VGG and the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from specnet.errors import ParameterError
from specnet.models import (
    CNN,
    VGG,
    ConvBlock,
    GlobalPool,
    create_model,
    frame_pool,
    get_activation,
    list_models,
)
from specnet.models.layers import ACTIVATIONS, time_reach

CNN_MODELS = list_models("cnn*")
VGG_MODELS = list_models("vgg*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- layers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", nn.ReLU),
        ("leaky_relu", nn.LeakyReLU),
        ("prelu", nn.PReLU),
        ("elu", nn.ELU),
        ("selu", nn.SELU),
        ("gelu", nn.GELU),
        ("tanh", nn.Tanh),
        ("sigmoid", nn.Sigmoid),
    ],
)
def test_get_activation(name, cls):
    act = get_activation(name)
    assert type(act) is cls
    assert get_activation(name) is not act  # a fresh module every call


def test_get_activation_default_and_unknown():
    assert isinstance(get_activation(), nn.ReLU)
    with pytest.raises(ParameterError, match="swish") as err:
        get_activation("swish")
    for name in ACTIVATIONS:
        assert name in str(err.value)


def test_activation_reaches_the_model():
    model = create_model("cnn_tiny", num_classes=2, act="gelu")
    kinds = {type(m) for m in model.features.modules()}
    assert nn.GELU in kinds and nn.ReLU not in kinds
    with pytest.raises(ParameterError, match="act='nope'"):
        create_model("vgg11", num_classes=2, act="nope")


def test_conv_block_layout_and_shape():
    block = ConvBlock(3, 8, n_convs=3, batch_norm=True, act="elu", pool="avg")
    assert [n for n, _ in block.named_children()] == [
        "conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "pool"
    ]
    assert block.conv1.bias is None  # batch norm follows
    assert block(torch.randn(2, 3, 9, 16)).shape == (2, 8, 5, 8)  # odd row kept

    plain = ConvBlock(1, 4, batch_norm=False, pool=None)
    assert [n for n, _ in plain.named_children()] == ["conv1", "act1", "conv2", "act2"]
    assert plain.conv1.bias is not None
    assert plain(torch.randn(1, 1, 7, 5)).shape == (1, 4, 7, 5)

    maxed = ConvBlock(1, 4, pool="max", pool_size=3)
    assert isinstance(maxed.pool, nn.MaxPool2d)
    assert maxed(torch.randn(1, 1, 9, 10)).shape == (1, 4, 3, 4)


@pytest.mark.parametrize("kwargs", [{"pool": "median"}, {"n_convs": 0}, {"pool_size": 0}])
def test_conv_block_bad_options(kwargs):
    with pytest.raises(ParameterError):
        ConvBlock(1, 4, **kwargs)


def test_global_pool_values():
    x = torch.tensor([[[[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]]]])  # (1, 1, 2, 3)
    assert GlobalPool("avg")(x).item() == pytest.approx(24 / 6)
    assert GlobalPool("max")(x).item() == 9.0
    # mean over frequency: [2, 3, 7] -> max 7 + mean 4
    assert GlobalPool("avgmax")(x).item() == pytest.approx(11.0)
    assert GlobalPool("avgmax")(torch.randn(4, 6, 5, 7)).shape == (4, 6)
    with pytest.raises(ParameterError, match="avgmax"):
        GlobalPool("sum")


def test_global_pool_keeps_frequency_bands_apart():
    # (1, 2, 4, 3): channel 0 lives in the low rows, channel 1 in the high rows.
    x = torch.zeros(1, 2, 4, 3)
    x[0, 0, :2] = torch.tensor([1.0, 2.0, 6.0])
    x[0, 1, 2:] = torch.tensor([4.0, 0.0, 2.0])
    # Two bands of two rows each, channel-major: [c0 low, c0 high, c1 low, c1 high].
    assert GlobalPool("avgmax", freq_bands=2)(x).tolist() == [[6.0 + 3.0, 0.0, 0.0, 4.0 + 2.0]]
    assert GlobalPool("avg", freq_bands=2)(x).tolist() == [[3.0, 0.0, 0.0, 2.0]]
    assert GlobalPool("max", freq_bands=2)(x).tolist() == [[6.0, 0.0, 0.0, 4.0]]
    # Moving a pattern to other bands changes the vector; one band cannot tell.
    flipped = x.flip(2)
    assert not torch.equal(GlobalPool("avgmax", freq_bands=2)(flipped), GlobalPool("avgmax", freq_bands=2)(x))
    assert torch.equal(GlobalPool("avgmax")(flipped), GlobalPool("avgmax")(x))
    # Fewer rows than bands still gives freq_bands values per channel.
    assert GlobalPool("avgmax", freq_bands=4)(torch.randn(3, 5, 2, 7)).shape == (3, 20)
    with pytest.raises(ParameterError, match="freq_bands=0"):
        GlobalPool("avg", freq_bands=0)


def test_cnn_with_frequency_bands_widens_the_embedding_and_rebuilds():
    model = create_model("cnn_tiny", num_classes=3, freq_bands=3).eval()
    assert model.num_features == 64 * 3 and model.arch_args["freq_bands"] == 3
    x = torch.randn(2, 1, 40, 81)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 192)
    clone = create_model(model.arch, **json.loads(json.dumps(model.arch_args))).eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(x), model(x))
    # Model files written before freq_bands existed rebuild with one band.
    old_args = {k: v for k, v in create_model("cnn_tiny", num_classes=3).arch_args.items() if k != "freq_bands"}
    assert create_model("cnn_tiny", **old_args).num_features == 64


def test_frame_pool():
    feats = torch.randn(2, 5, 3, 7)  # (B, C, H', W')
    frames = frame_pool(feats)
    assert frames.shape == (2, 7, 5)
    torch.testing.assert_close(frames[1, 4], feats[1, :, :, 4].mean(dim=1))


@pytest.mark.parametrize(("name", "reach"), [("cnn_tiny", 76), ("cnn_small", 76), ("vgg11", 150), ("vgg16", 212)])
def test_time_reach_is_the_receptive_field(name, reach):
    # vgg16's 212 pixels is the published receptive field of its last pool; cnn_*: four blocks
    # of two 3x3 convs and a 2x2 pool, 1 + (2 + 2 + 1) * (1 + 2 + 4 + 8) = 76 frames.
    assert time_reach(create_model(name, num_classes=2).features) == reach


def test_time_reach_of_dilated_strided_and_unknown_layers():
    trunk = nn.Sequential(nn.Conv2d(1, 2, (3, 5), stride=(1, 2), dilation=(1, 2)), nn.ReLU(),
                          nn.MaxPool2d((2, 3)), nn.BatchNorm2d(2))
    assert time_reach(trunk) == 1 + 4 * 2 + 2 * 2  # the pool's 3 columns are 2 input columns apart
    assert time_reach(nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1))) is None  # sees everything


# --- every registered model ---------------------------------------------------


def _forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    logits = model(x)
    assert logits.shape == (x.shape[0], num_classes)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.backbone_parameters())


@pytest.mark.parametrize("size", [(64, 101), (32, 48)])
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", CNN_MODELS)
def test_cnn_forward_backward(name, in_chans, size):
    model = create_model(name, num_classes=5, in_chans=in_chans)
    _forward_backward(model, torch.randn(2, in_chans, *size), 5)
    feats = model.forward_features(torch.randn(2, in_chans, *size))
    assert feats.shape[-1] == math.ceil(size[1] / model.time_stride)
    assert model.time_stride == 16


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", VGG_MODELS)
def test_vgg_forward_backward(name, in_chans):
    model = create_model(name, num_classes=4, in_chans=in_chans)
    assert isinstance(model, VGG) and model.arch == name
    _forward_backward(model, torch.randn(2, in_chans, 32, 32), 4)
    assert model.time_stride == 32
    assert model.forward_features(torch.randn(1, in_chans, 32, 70)).shape == (1, 512, 1, 3)


@pytest.mark.parametrize("name", ["cnn_tiny", "cnn_base", "vgg11_bn"])
def test_pre_logits_include_top_and_num_classes_zero(name):
    model = create_model(name, num_classes=6).eval()
    x = torch.randn(3, 1, 32, 48)
    feats = model.forward_features(x)
    emb = model.forward_head(feats, pre_logits=True)
    assert emb.shape == (3, model.num_features)
    torch.testing.assert_close(model(x), model.head.fc(emb))

    bare = create_model(name, include_top=False).eval()
    channels = bare.features(x).shape[1]
    assert bare.num_classes == 0 and bare.num_features == channels
    assert bare(x).shape == (3, channels)
    assert not any(isinstance(m, nn.Linear) for m in bare.modules())

    headless = create_model(name, num_classes=0).eval()
    assert headless(x).shape == (3, headless.num_features)
    assert create_model(name, include_top=False, num_classes=0).num_classes == 0  # as a saved descriptor's arch_args say
    with pytest.raises(ParameterError, match=r"^num_classes=6 with include_top=False: there is no classifier"):
        create_model(name, include_top=False, num_classes=6)


@pytest.mark.parametrize("name", ["cnn_small", "vgg11"])
def test_a_descriptor_is_the_same_in_training_mode(name):
    # As Keras's include_top=False: no dropout after the pooling (it gave another vector on every call).
    bare = create_model(name, include_top=False, drop_rate=0.5)
    assert bare.training and bare.arch_args["drop_rate"] == 0.0
    x = torch.randn(2, 1, 32, 48)
    torch.testing.assert_close(bare(x), bare(x))
    with pytest.raises(ParameterError, match=r"drop_rate=5.0 must be"):  # still checked
        create_model(name, include_top=False, drop_rate=5.0)
    rebuilt = create_model(bare.arch, **bare.arch_args)  # what a saved descriptor loads as
    rebuilt.load_state_dict(bare.state_dict())
    torch.testing.assert_close(rebuilt(x), bare(x))


def test_num_features_follow_hidden_dim():
    assert create_model("cnn_small", num_classes=3).num_features == 128
    model = create_model("cnn_small", num_classes=3, hidden_dim=[64, 32])
    assert model.num_features == 32
    assert [m.out_features for m in model.head.modules() if isinstance(m, nn.Linear)] == [64, 32, 3]
    assert create_model("vgg11", num_classes=3).num_features == 256
    assert create_model("vgg11", num_classes=3, hidden_dim=None).num_features == 512


def test_cnn_smallest_input_and_channels():
    model = CNN(num_classes=2, channels=(4, 8, 8, 8, 8))
    assert model.time_stride == 32
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 2)
    assert model.forward_features(torch.randn(1, 1, 16, 33)).shape == (1, 8, 1, 2)
    assert CNN(num_classes=2, pool=None, channels=(4,)).time_stride == 1


def test_batched_equals_item_by_item():
    model = create_model("cnn_tiny", num_classes=3).eval()
    x = torch.randn(4, 1, 32, 40)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_tiny", "vgg11_bn"])
def test_arch_args_rebuild(name):
    model = create_model(name, num_classes=7, hidden_dim=(16,), drop_rate=0.1)
    args = json.loads(json.dumps(model.arch_args))
    clone = create_model(model.arch, **args)
    assert type(clone) is type(model) and clone.arch == name
    clone.load_state_dict(model.state_dict())  # strict: same keys and shapes
    model.eval(), clone.eval()
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(clone(x), model(x))


def test_reset_classifier():
    model = create_model("cnn_tiny", num_classes=5)
    backbone = [p.clone() for p in model.backbone_parameters()]
    model.reset_classifier(9)
    assert model.num_classes == 9 and model.arch_args["num_classes"] == 9
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 9)
    for before, after in zip(backbone, model.backbone_parameters()):
        assert torch.equal(before, after)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, model.num_features)

    vgg = create_model("vgg11", num_classes=5)
    vgg.reset_classifier(2)
    assert vgg(torch.randn(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("name", ["cnn_small", "vgg13"])
def test_head_and_backbone_parameters_partition(name):
    model = create_model(name, num_classes=3)
    head = {id(p) for p in model.head_parameters()}
    backbone = {id(p) for p in model.backbone_parameters()}
    assert head and backbone and not head & backbone
    assert head | backbone == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.head.parameters()} == head


def test_vgg_state_dict_keys_match_torchvision():
    # torchvision's vgg16 and vgg11_bn layouts (conv / batch-norm indices).
    vgg16_convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    keys = create_model("vgg16", include_top=False).state_dict().keys()
    assert list(keys) == [f"features.{i}.{p}" for i in vgg16_convs for p in ("weight", "bias")]

    bn_convs = [0, 4, 8, 11, 15, 18, 22, 25]
    keys = set(create_model("vgg11_bn", include_top=False).state_dict())
    for i in bn_convs:
        assert {f"features.{i}.weight", f"features.{i}.bias"} <= keys
        assert {f"features.{i + 1}.running_mean", f"features.{i + 1}.running_var"} <= keys
    assert len(keys) == 8 * 2 + 8 * 5


def test_imagenet_head():
    model = VGG(depth=11, num_classes=10, head="imagenet").eval()
    linears = {n: m for n, m in model.classifier.named_children() if isinstance(m, nn.Linear)}
    assert {n: (m.in_features, m.out_features) for n, m in linears.items()} == {
        "0": (25088, 4096), "3": (4096, 4096), "6": (4096, 10)
    }
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 10)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 4096)
    assert model.num_features == 4096


def test_registry_errors():
    with pytest.raises(ParameterError, match="unknown architecture 'resnet50'") as err:
        create_model("resnet50", num_classes=2)
    for name in list_models():
        assert name in str(err.value)
    with pytest.raises(ParameterError, match="dropout"):
        create_model("cnn", num_classes=2, dropout=0.5)
    with pytest.raises(ParameterError, match="ImageNet"):
        create_model("cnn", num_classes=2, pretrained=True)
    with pytest.raises(ParameterError, match="ImageNet"):
        create_model("cnn_tiny", num_classes=2, weights="x.pth")
    with pytest.raises(ParameterError, match="num_classes is required"):
        create_model("vgg11")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("cnn", {"num_classes": -1}, "num_classes=-1"),
        ("cnn", {"num_classes": 2, "in_chans": 0}, "in_chans=0"),
        ("cnn", {"num_classes": 2, "channels": ()}, "channels"),
        ("cnn", {"num_classes": 2, "drop_rate": 1.0}, "drop_rate=1.0"),
        ("cnn", {"num_classes": 2, "global_pool": "sum"}, "global_pool='sum'"),
        ("cnn", {"num_classes": 2, "hidden_dim": 0}, "hidden_dim=0"),
        ("cnn", {"num_classes": 2, "hidden_dim": True}, "hidden_dim=True"),
        ("cnn", {"num_classes": True}, "num_classes=True"),
        ("cnn", {"num_classes": 2, "drop_rate": "0.1"}, "drop_rate='0.1'"),
        ("vgg11", {"num_classes": 2, "head": "fancy"}, "head='fancy'"),
        ("vgg11", {"num_classes": 2, "depth": 12}, "depth=12"),
        ("cnn", {"num_classes": 2, "channels": 16}, r"^channels=16 must be a sequence of block widths, such as \(16, 32, 64, 128\)$"),
        ("cnn", {"num_classes": 2, "channels": "16"}, r"^channels='16' must be a sequence of block widths"),
        ("cnn", {"num_classes": 2, "batch_norm": "yes"}, r"^batch_norm='yes' must be True or False$"),
        ("vgg11", {"num_classes": 2, "batch_norm": 2}, r"^batch_norm=2 must be True or False$"),
        ("cnn", {"num_classes": 2, "channels": np.zeros((2, 2), int)}, r"^channels=\[\[0, 0\], \[0, 0\]\] must be a sequence of block widths"),
        # a string is true to Python: include_top='no' would have built a classifier
        ("vgg11", {"num_classes": 2, "include_top": "no"}, r"^include_top='no' must be True or False$"),
        ("cnn", {"include_top": None}, r"^include_top=None must be True or False$"),
    ],
)
def test_bad_values(name, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        create_model(name, **kwargs)


def test_flags_take_0_1_and_numpy_bools_and_channels_a_numpy_array():
    # --arch-arg batch_norm=0 parses as 0, and model files trained that way hold it: they must still build.
    plain = create_model("cnn", num_classes=2, batch_norm=0, channels=np.array([8, 16]))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in create_model("vgg11", num_classes=2, batch_norm=np.True_).modules()) == 8
    assert create_model("cnn", include_top=0).num_features == create_model("cnn", include_top=False).num_features


def test_numpy_numbers_build_a_model_whose_arch_args_are_json():
    model = create_model(
        "cnn_small", num_classes=np.int64(3), in_chans=np.int64(1), hidden_dim=[np.int64(32)],
        n_convs=np.int64(1), pool_size=np.int64(2), freq_bands=np.int64(2), drop_rate=np.float32(0.25),
    )
    assert (model.num_classes, model.in_chans, type(model.num_classes), type(model.num_features)) == (3, 1, int, int)
    assert model(torch.randn(2, 1, 32, 40)).shape == (2, 3)
    model.reset_classifier(np.int64(4))
    assert json.loads(json.dumps(model.arch_args))["num_classes"] == 4 and type(model.num_classes) is int
    vgg = create_model("vgg11", num_classes=2, drop_rate=np.float64(0.1), hidden_dim=None)
    vgg.reset_classifier(np.int64(5))
    assert json.loads(json.dumps(vgg.arch_args))["num_classes"] == 5
    with pytest.raises(ParameterError, match="depth=11.0"):
        VGG(depth=11.0, num_classes=2)


def test_list_models():
    assert list_models("vgg*") == [
        "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"
    ]
    assert list_models("cnn*") == ["cnn", "cnn_base", "cnn_small", "cnn_tiny"]
    assert list_models("nothing*") == []
    sizes = {n: create_model(n, num_classes=2).arch_args["channels"] for n in CNN_MODELS}
    assert sizes == {
        "cnn": [16, 32, 64, 128],
        "cnn_small": [16, 32, 64, 128],
        "cnn_tiny": [8, 16, 32, 64],
        "cnn_base": [32, 64, 128, 256],
    }



class _OwnModel(nn.Module):
    """A user's model, with no arch attribute of its own."""

    def __init__(self, num_classes=None, in_chans=1):
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes or 1)


def own_model(**kwargs) -> _OwnModel:
    return _OwnModel(**kwargs)


def test_a_registered_model_of_ones_own_is_built_and_named(monkeypatch):
    # create_model read the model's arch before naming it, an AttributeError for such a model.
    from specnet.models import registry

    monkeypatch.setitem(registry._MODELS, "own_model", own_model)
    model = create_model("own_model", num_classes=3)
    assert isinstance(model, _OwnModel) and model.arch == "own_model" and model.fc.out_features == 3
