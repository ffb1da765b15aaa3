"""Model families for spectrogram (and image) classification.

Every model maps ``(B, in_chans, H, W)`` to logits ``(B, num_classes)`` and
shares the interface of :class:`~specnet.models.layers.SpectrogramModel`:
``forward_features``, ``forward_head(feats, pre_logits=...)``,
``reset_classifier``, ``num_features``, ``time_stride``, ``arch`` and
``arch_args``. Build them by name with :func:`create_model`.
"""

from __future__ import annotations

from .cnn import CNN
from .layers import (
    ClassifierHead,
    ConvBlock,
    GlobalPool,
    SpectrogramModel,
    frame_pool,
    get_activation,
)
from .pretrained import imagenet_weights_url, load_imagenet_weights
from .registry import create_model, is_model, list_models, register_model
from .summary import summary
from .vgg import VGG

__all__ = [
    "CNN",
    "VGG",
    "ClassifierHead",
    "ConvBlock",
    "GlobalPool",
    "SpectrogramModel",
    "create_model",
    "frame_pool",
    "get_activation",
    "imagenet_weights_url",
    "is_model",
    "list_models",
    "load_imagenet_weights",
    "register_model",
    "summary",
]
