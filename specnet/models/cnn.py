"""A small from-scratch CNN for log-mel spectrograms.

Blocks of [3x3 conv, batch norm, ReLU] x 2 with a 2x2 average pool, then mean
over frequency and max + mean over time, dropout and a linear layer: the shape of
the plain hand-written log-mel CNN measured before specnet (99.67 % on FSDD's official
split, 88.5 % on ESC-10), which the recipes' settings (``recipes/``) take further.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..checks import as_flag
from ..errors import ParameterError
from .layers import (
    MAX_DEPTH,
    MAX_FREQ_BANDS,
    MAX_WIDTH,
    ClassifierHead,
    ConvBlock,
    SpectrogramModel,
    check_drop_rate,
    check_int,
    classifier_size,
    init_weights,
    normalize_hidden_dim,
)
from .registry import register_model

__all__ = ["CNN", "cnn", "cnn_base", "cnn_small", "cnn_tiny"]


class CNN(SpectrogramModel):
    """A stack of :class:`ConvBlock` s and a :class:`ClassifierHead`.

    Input ``(B, in_chans, H, W)`` with any ``H, W >= 1`` (pools use ceil mode,
    so e.g. 16 x 16 survives four blocks as 1 x 1); ``forward_features``
    returns ``(B, channels[-1], ceil(H / s), ceil(W / s))`` with
    ``s = time_stride = pool_size ** len(channels)``.

    Parameters
    ----------
    num_classes : int >= 0 or None
        Number of classes; 0 for no final layer. Required unless
        ``include_top=False``.
    in_chans : int > 0
        Input channels (1 for a spectrogram).
    channels : sequence of int in [1, 65536]
        Output channels of each block; at most 16 blocks.
    n_convs : int in [1, 16]
        Conv layers per block.
    batch_norm : bool
        Batch norm after each conv.
    act : str
        Activation, see :func:`get_activation`.
    pool : {"avg", "max", None}
        Pool at the end of each block.
    pool_size : int > 0
        Kernel and stride of that pool.
    global_pool : {"avgmax", "avg", "max"}
        See :class:`GlobalPool`.
    freq_bands : int in [1, 1024]
        Frequency bands the global pooling keeps apart (1: pool all of them).
    drop_rate : float in [0, 1)
        Dropout in the head.
    hidden_dim : int, sequence of int, or None
        Hidden dense layers between pooling and the final layer (at most 16 of at most
        65536 units).
    include_top : bool
        False drops the dropout, the hidden layers and the classifier, so ``forward``
        returns the pooled ``(B, channels[-1] * freq_bands)`` descriptor with no dropout
        in training mode (``num_classes`` becomes 0, ``drop_rate`` 0, ``hidden_dim`` None; a final
        layer added by ``reset_classifier`` has no dropout before it). Its batch norm in
        training mode, as a new model starts, still normalises by each batch's statistics
        and updates its running ones: call ``.eval()`` for descriptors that do not depend
        on the rest of the batch.
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        in_chans: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        n_convs: int = 2,
        batch_norm: bool = True,
        act: str = "relu",
        pool: str | None = "avg",
        pool_size: int = 2,
        global_pool: str = "avgmax",
        freq_bands: int = 1,
        drop_rate: float = 0.3,
        hidden_dim: int | Sequence[int] | None = None,
        include_top: bool = True,
    ) -> None:
        super().__init__()
        num_classes = classifier_size(num_classes, include_top)
        if not include_top:
            hidden_dim = None
        in_chans = check_int("in_chans", in_chans, minimum=1)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (Sequence, np.ndarray)) or np.ndim(channels) != 1:
            shown = channels.tolist() if isinstance(channels, np.ndarray) else channels
            raise ParameterError(f"channels={shown!r} must be a sequence of block widths, such as (16, 32, 64, 128)")
        if len(channels) > MAX_DEPTH:
            raise ParameterError(f"channels names {len(channels)} conv blocks; at most {MAX_DEPTH}")
        channels = [check_int("channels", c, minimum=1, maximum=MAX_WIDTH) for c in channels]
        batch_norm = as_flag("batch_norm", batch_norm)
        if not channels:
            raise ParameterError("channels=() must name at least one block")
        n_convs = check_int("n_convs", n_convs, minimum=1, maximum=MAX_DEPTH)
        if pool is not None:
            pool_size = check_int("pool_size", pool_size, minimum=1)
        freq_bands = check_int("freq_bands", freq_bands, minimum=1, maximum=MAX_FREQ_BANDS)
        drop_rate = check_drop_rate(drop_rate)
        if not include_top:
            drop_rate = 0.0  # a descriptor is the same in training mode
        hidden = normalize_hidden_dim(hidden_dim)

        blocks = []
        prev = in_chans
        for chans in channels:
            blocks.append(
                ConvBlock(
                    prev, chans, n_convs=n_convs, batch_norm=batch_norm, act=act, pool=pool, pool_size=pool_size
                )
            )
            prev = chans
        self.features = torch.nn.Sequential(*blocks)
        self.head = ClassifierHead(
            prev, num_classes, global_pool=global_pool, freq_bands=freq_bands, drop_rate=drop_rate,
            hidden_dim=hidden or None,
        )
        init_weights(self)

        self.arch = "cnn"
        self.arch_args: dict[str, Any] = {
            "num_classes": num_classes,
            "in_chans": in_chans,
            "channels": channels,
            "n_convs": n_convs,
            "batch_norm": batch_norm,
            "act": act,
            "pool": pool,
            "pool_size": pool_size,
            "global_pool": global_pool,
            "freq_bands": freq_bands,
            "drop_rate": drop_rate,
            "hidden_dim": hidden or None,
        }
        self.num_classes = num_classes
        self.num_features = self.head.num_features
        self.in_chans = in_chans
        self.time_stride = blocks[0].pool_size ** len(blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, C, ceil(H / time_stride), ceil(W / time_stride))``."""
        return self.features(x)

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, H', W')`` -> logits ``(B, num_classes)``, or ``(B, num_features)`` if ``pre_logits``."""
        return self.head(feats, pre_logits=pre_logits)


def _cnn(channels: tuple[int, ...], kwargs: dict[str, Any]) -> CNN:
    # Size presets are defaults, so `create_model("cnn_tiny", channels=...)` still works.
    return CNN(**{"channels": channels, **kwargs})


@register_model
def cnn_tiny(**kwargs: Any) -> CNN:
    """CNN with channels (8, 16, 32, 64), about 74 k parameters."""
    return _cnn((8, 16, 32, 64), kwargs)


@register_model
def cnn_small(**kwargs: Any) -> CNN:
    """CNN with channels (16, 32, 64, 128), about 0.3 M parameters."""
    return _cnn((16, 32, 64, 128), kwargs)


@register_model
def cnn(**kwargs: Any) -> CNN:
    """Alias of :func:`cnn_small`."""
    return cnn_small(**kwargs)


@register_model
def cnn_base(**kwargs: Any) -> CNN:
    """CNN with channels (32, 64, 128, 256), about 1.2 M parameters."""
    return _cnn((32, 64, 128, 256), kwargs)
