"""VGG 11/13/16/19 with or without batch norm (Simonyan & Zisserman, 2014).

The trunk ``features`` is built from a config list exactly as torchvision
builds it, so ``features.N`` keys match torchvision's ImageNet weight files
and :func:`specnet.models.pretrained.load_imagenet_weights` loads them as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..checks import as_flag, is_integer
from ..errors import ParameterError
from .layers import (
    ClassifierHead,
    SpectrogramModel,
    check_drop_rate,
    check_int,
    classifier_size,
    final_layer,
    get_activation,
    init_weights,
    normalize_hidden_dim,
)
from .registry import register_model

__all__ = ["CFGS", "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]

# Output channels of each 3x3 conv; "M" is a 2x2 max pool (torchvision's A, B, D, E).
CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

HEADS = ("global", "imagenet")
_IMAGENET_POOL = (7, 7)
_IMAGENET_HIDDEN = 4096


def make_features(
    cfg: Sequence[int | str], *, in_chans: int, batch_norm: bool, act: str
) -> tuple[nn.Sequential, dict[str, str]]:
    """Build the trunk from a config list, with torchvision's module indices.

    Returns the ``nn.Sequential`` and Keras-style display names for its
    modules (``{"0": "block1_conv1", ...}``), used by :func:`summary`.
    """
    layers: list[nn.Module] = []
    names: dict[str, str] = {}
    block, conv = 1, 0
    prev = in_chans
    for v in cfg:
        if v == "M":
            names[str(len(layers))] = f"block{block}_pool"
            # ceil_mode only matters for odd sizes (spectrogram frame counts);
            # at 224 x 224 the output equals torchvision's.
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            block, conv = block + 1, 0
            continue
        conv += 1
        stem = f"block{block}_conv{conv}"
        names[str(len(layers))] = stem
        layers.append(nn.Conv2d(prev, int(v), kernel_size=3, padding=1))
        if batch_norm:
            names[str(len(layers))] = f"{stem}_bn"
            layers.append(nn.BatchNorm2d(int(v)))
        names[str(len(layers))] = f"{stem}_{act}"
        layers.append(get_activation(act))
        prev = int(v)
    return nn.Sequential(*layers), names


class VGG(SpectrogramModel):
    """VGG trunk with a global-pooling head or torchvision's ImageNet head.

    ``forward_features`` maps ``(B, in_chans, H, W)`` to
    ``(B, 512, ceil(H / 32), ceil(W / 32))`` (``time_stride = 32``); any
    ``H, W >= 1`` works.

    Heads (``head``):

    ``"global"`` (default)
        ``head``: GlobalPool(``global_pool``), dropout, ``Linear(512,
        hidden_dim)``, ReLU, dropout, ``Linear(hidden_dim, num_classes)``;
        ``num_features = hidden_dim`` (512 with ``hidden_dim=None``).
    ``"imagenet"``
        torchvision's ``avgpool`` (adaptive 7 x 7) and ``classifier``
        (``classifier.0`` Linear(25088, 4096), ReLU, Dropout, ``classifier.3``
        Linear(4096, 4096), ReLU, Dropout, ``classifier.6`` Linear(4096,
        num_classes)); ``num_features = 4096``. ``global_pool`` and
        ``hidden_dim`` are not used.

    Parameters
    ----------
    depth : {11, 13, 16, 19}
        Number of weight layers.
    batch_norm : bool
        Batch norm after each conv.
    num_classes : int >= 0 or None
        Number of classes; 0 for no final layer. Required unless
        ``include_top=False``.
    in_chans : int > 0
        Input channels: 1 for spectrograms, 3 for RGB images.
    act : str
        Activation, see :func:`get_activation`; ImageNet weights expect relu.
    head : {"global", "imagenet"}
        See above.
    global_pool : {"avg", "max", "avgmax"}
        Pooling of the global head.
    drop_rate : float in [0, 1)
        Dropout in the head.
    hidden_dim : int, sequence of int, or None
        Hidden dense layers of the global head.
    include_top : bool
        False keeps only the trunk and the global pool: ``forward`` returns
        the pooled ``(B, 512)`` descriptor, with no dropout in training mode,
        as Keras's ``include_top=False`` does (sets ``num_classes=0``,
        ``head="global"``, ``drop_rate=0``, ``hidden_dim=None``, whatever
        they were given; a final layer added by ``reset_classifier`` has no
        dropout before it). The ``_bn`` models in training mode, as a new
        model starts, still normalise by each batch's statistics and update
        their running ones: call ``.eval()`` for descriptors that do not
        depend on the rest of the batch.
    """

    def __init__(
        self,
        *,
        depth: int = 16,
        batch_norm: bool = False,
        num_classes: int | None = None,
        in_chans: int = 1,
        act: str = "relu",
        head: str = "global",
        global_pool: str = "avg",
        drop_rate: float = 0.5,
        hidden_dim: int | Sequence[int] | None = 256,
        include_top: bool = True,
    ) -> None:
        super().__init__()
        if not (is_integer(depth) and depth in CFGS):
            raise ParameterError(f"depth={depth!r} must be one of {', '.join(map(str, CFGS))}")
        if head not in HEADS:
            raise ParameterError(f"head={head!r} must be one of {', '.join(HEADS)}")
        num_classes = classifier_size(num_classes, include_top)
        if not include_top:
            head, hidden_dim = "global", None
        in_chans = check_int("in_chans", in_chans, minimum=1)
        batch_norm = as_flag("batch_norm", batch_norm)
        depth = int(depth)
        drop_rate = check_drop_rate(drop_rate)
        if not include_top:
            drop_rate = 0.0  # a descriptor is the same in training mode
        hidden = normalize_hidden_dim(hidden_dim)

        cfg = CFGS[depth]
        self.features, names = make_features(cfg, in_chans=in_chans, batch_norm=batch_norm, act=act)
        self.display_names = {f"features.{k}": v for k, v in names.items()}
        width = [v for v in cfg if v != "M"][-1]
        self.head_kind = head
        if head == "global":
            self.head = ClassifierHead(
                width, num_classes, global_pool=global_pool, drop_rate=drop_rate, hidden_dim=hidden or None
            )
            self.num_features = self.head.num_features
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(_IMAGENET_POOL)
            self.classifier = nn.Sequential(
                nn.Linear(width * _IMAGENET_POOL[0] * _IMAGENET_POOL[1], _IMAGENET_HIDDEN),
                nn.ReLU(),
                nn.Dropout(drop_rate),
                nn.Linear(_IMAGENET_HIDDEN, _IMAGENET_HIDDEN),
                nn.ReLU(),
                nn.Dropout(drop_rate),
                nn.Identity(),
            )
            self.num_features = _IMAGENET_HIDDEN
        init_weights(self)
        if head == "imagenet":
            self.classifier[6] = final_layer(_IMAGENET_HIDDEN, num_classes)

        self.arch = f"vgg{depth}{'_bn' if batch_norm else ''}"
        self.arch_args: dict[str, Any] = {
            "depth": depth,
            "batch_norm": batch_norm,
            "num_classes": num_classes,
            "in_chans": in_chans,
            "act": act,
            "head": head,
            "global_pool": global_pool,
            "drop_rate": drop_rate,
            "hidden_dim": hidden or None,
        }
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.time_stride = 2 ** cfg.count("M")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, 512, ceil(H / 32), ceil(W / 32))``."""
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """``(B, 512, H', W')`` -> logits ``(B, num_classes)``, or ``(B, num_features)`` if ``pre_logits``."""
        if self.head_kind == "global":
            return self.head(feats, pre_logits=pre_logits)
        x = torch.flatten(self.avgpool(feats), 1)  # (B, 512 * 7 * 7)
        x = self.classifier[:6](x)  # (B, 4096)
        return x if pre_logits else self.classifier[6](x)

    def _replace_final_layer(self, num_classes: int) -> None:
        if self.head_kind == "global":
            self.head.reset(num_classes)
        else:
            self.classifier[6] = final_layer(_IMAGENET_HIDDEN, num_classes)


def _vgg(depth: int, batch_norm: bool, kwargs: dict[str, Any]) -> VGG:
    return VGG(**{"depth": depth, "batch_norm": batch_norm, **kwargs})


@register_model
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 (config A)."""
    return _vgg(11, False, kwargs)


@register_model
def vgg11_bn(**kwargs: Any) -> VGG:
    """VGG-11 with batch norm."""
    return _vgg(11, True, kwargs)


@register_model
def vgg13(**kwargs: Any) -> VGG:
    """VGG-13 (config B)."""
    return _vgg(13, False, kwargs)


@register_model
def vgg13_bn(**kwargs: Any) -> VGG:
    """VGG-13 with batch norm."""
    return _vgg(13, True, kwargs)


@register_model
def vgg16(**kwargs: Any) -> VGG:
    """VGG-16 (config D)."""
    return _vgg(16, False, kwargs)


@register_model
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with batch norm."""
    return _vgg(16, True, kwargs)


@register_model
def vgg19(**kwargs: Any) -> VGG:
    """VGG-19 (config E)."""
    return _vgg(19, False, kwargs)


@register_model
def vgg19_bn(**kwargs: Any) -> VGG:
    """VGG-19 with batch norm."""
    return _vgg(19, True, kwargs)
