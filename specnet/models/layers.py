"""Building blocks shared by the model families: activations, conv blocks,
global pooling, the classifier head, the common model interface, and running
any module in eval mode for a while.

Tensors follow the image layout ``(B, C, H, W)``; for a spectrogram ``H`` is
frequency (mel bands) and ``W`` is time (frames).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..checks import as_flag, check_int, is_finite_number  # check_int: also for the model families
from ..errors import ParameterError

__all__ = [
    "ACTIVATIONS",
    "GLOBAL_POOLS",
    "MAX_DEPTH",
    "MAX_FREQ_BANDS",
    "MAX_WIDTH",
    "ClassifierHead",
    "ConvBlock",
    "GlobalPool",
    "SpectrogramModel",
    "check_drop_rate",
    "check_int",
    "classifier_size",
    "eval_mode",
    "final_layer",
    "frame_pool",
    "get_activation",
    "init_weights",
    "normalize_hidden_dim",
    "time_reach",
]

# Factories, not instances: every call must return a fresh module (PReLU has
# its own weight, and modules must not be shared between layers).
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

GLOBAL_POOLS = ("avg", "max", "avgmax")

# Bounds on what a model may declare, far above any useful network, so that a model file's
# metadata cannot make loading build millions of layers or tensors whose size overflows.
MAX_WIDTH = 65_536  # channels of a conv block, units of a dense layer
MAX_DEPTH = 16  # conv blocks, convs per block, dense layers
MAX_FREQ_BANDS = 1024
_LOCAL_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def check_drop_rate(drop_rate: float) -> float:
    """Return ``drop_rate`` if it lies in ``[0, 1)``, else raise ParameterError."""
    if not (is_finite_number(drop_rate) and 0.0 <= drop_rate < 1.0):
        raise ParameterError(f"drop_rate={drop_rate!r} must be a number in [0, 1)")
    return float(drop_rate)


def get_activation(name: str = "relu") -> nn.Module:
    """Return a new activation module by name.

    Parameters
    ----------
    name : str
        One of ``relu`` (default), ``leaky_relu``, ``prelu``, ``elu``,
        ``selu``, ``gelu``, ``tanh``, ``sigmoid``.

    Raises
    ------
    ParameterError
        If ``name`` is not one of these.
    """
    try:
        factory = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ParameterError(
            f"act={name!r} is not a known activation; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
    return factory()


def _local_pool(kind: str | None, size: int) -> nn.Module | None:
    if kind is None:
        return None
    if kind not in _LOCAL_POOLS:
        raise ParameterError(f"pool={kind!r} must be 'max', 'avg' or None")
    # ceil_mode keeps a last odd row/column instead of dropping it, so a
    # 16-pixel input survives four 2x2 pools and odd frame counts lose nothing.
    return _LOCAL_POOLS[kind](kernel_size=size, stride=size, ceil_mode=True)


class ConvBlock(nn.Sequential):
    """``n_convs`` times [3x3 conv (padding 1) + optional batch norm + activation], then a pool.

    Maps ``(B, in_chans, H, W)`` to ``(B, out_chans, ceil(H / s), ceil(W / s))``
    with ``s = pool_size`` (``s = 1`` when ``pool`` is None). Children are
    named ``conv1, bn1, act1, conv2, ...,  pool``.

    Parameters
    ----------
    in_chans, out_chans : int > 0
        Input and output channels.
    n_convs : int > 0
        Number of conv layers.
    batch_norm : bool
        Add BatchNorm2d after each conv (the conv then has no bias).
    act : str
        Activation name, see :func:`get_activation`.
    pool : {"max", "avg", None}
        Pooling after the convs.
    pool_size : int > 0
        Kernel and stride of the pool.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        n_convs: int = 2,
        batch_norm: bool = True,
        act: str = "relu",
        pool: str | None = "max",
        pool_size: int = 2,
    ) -> None:
        super().__init__()
        in_chans = check_int("in_chans", in_chans, minimum=1)
        out_chans = check_int("out_chans", out_chans, minimum=1, maximum=MAX_WIDTH)
        n_convs = check_int("n_convs", n_convs, minimum=1, maximum=MAX_DEPTH)
        self.pool_size = check_int("pool_size", pool_size, minimum=1) if pool is not None else 1
        chans = in_chans
        for i in range(1, n_convs + 1):
            # A bias before batch norm is cancelled by its mean subtraction.
            self.add_module(f"conv{i}", nn.Conv2d(chans, out_chans, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                self.add_module(f"bn{i}", nn.BatchNorm2d(out_chans))
            self.add_module(f"act{i}", get_activation(act))
            chans = out_chans
        pool_layer = _local_pool(pool, pool_size)
        if pool_layer is not None:
            self.add_module("pool", pool_layer)


class GlobalPool(nn.Module):
    """Pool a feature map ``(B, C, H, W)`` to one vector per item ``(B, C * freq_bands)``.

    Parameters
    ----------
    kind : {"avg", "max", "avgmax"}
        ``avg`` / ``max``: mean / max over ``H`` and ``W``. ``avgmax``: mean
        over frequency (``H``), then max plus mean over time (``W``); the max
        picks the loudest event, the mean keeps the background, which suits
        spectrograms best.
    freq_bands : int > 0
        Keep this many frequency bands apart instead of pooling all of ``H``
        into one (adaptive pooling of ``H`` to ``freq_bands`` rows, by mean or,
        for ``kind="max"``, by max):
        a convolutional trunk is blind to where on the frequency axis a
        pattern lies, and a vowel's formants or a rotor's hum are told apart
        by exactly that. The vector is channel-major: ``C`` blocks of
        ``freq_bands`` values, lowest band first.
    """

    def __init__(self, kind: str = "avg", *, freq_bands: int = 1) -> None:
        super().__init__()
        if kind not in GLOBAL_POOLS:
            raise ParameterError(f"global_pool={kind!r} must be one of {', '.join(GLOBAL_POOLS)}")
        self.kind = kind
        self.freq_bands = check_int("freq_bands", freq_bands, minimum=1, maximum=MAX_FREQ_BANDS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = self._pool_bands(x)  # (B, C, freq_bands, W)
        if self.kind == "max":
            return bands.amax(dim=3).flatten(1)
        if self.kind == "avg":
            return bands.mean(dim=3).flatten(1)
        per_band = bands.flatten(1, 2)  # (B, C * freq_bands, W)
        return per_band.amax(dim=-1) + per_band.mean(dim=-1)

    def _pool_bands(self, x: torch.Tensor) -> torch.Tensor:
        """Mean (max for ``kind="max"``) of ``x`` over each band's rows: ``(B, C, freq_bands, W)``.

        Band ``i`` holds rows ``floor(i H / k)`` to ``ceil((i + 1) H / k)``, as
        adaptive pooling would, but written as slices: the ONNX exporter cannot
        write an adaptive pool over a time axis of unknown length.
        """
        reduce = torch.amax if self.kind == "max" else torch.mean
        height, k = x.shape[2], self.freq_bands
        if k == 1:
            return reduce(x, dim=2, keepdim=True)
        edges = [(i * height // k, ((i + 1) * height + k - 1) // k) for i in range(k)]  # floor, ceil
        return torch.stack([reduce(x[:, :, lo:hi], dim=2) for lo, hi in edges], dim=2)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", freq_bands={self.freq_bands}" if self.freq_bands > 1 else "")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (dropout off, batch-norm running statistics) inside the block;
    afterwards every submodule has its own mode back, as the caller had it (a frozen
    backbone in eval under a training head, say), which ``module.train(flag)`` would not do."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def frame_pool(feats: torch.Tensor) -> torch.Tensor:
    """Average a feature map over frequency, keeping one vector per time column.

    Parameters
    ----------
    feats : torch.Tensor [shape=(B, C, H', W')]
        Output of ``forward_features``.

    Returns
    -------
    torch.Tensor [shape=(B, W', C)]
        Frame-level embeddings; column ``j`` starts at input frame
        ``j * model.time_stride``.
    """
    return feats.mean(dim=2).transpose(1, 2)


#: Modules that map each position to itself (no reach along time); containers are walked into.
_POINTWISE = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d, *ACTIVATIONS.values())


def time_reach(trunk: nn.Module) -> int | None:
    """How far along time (input columns) any output column of ``trunk`` can see, or None
    if ``trunk`` holds a layer whose reach is unknown.

    The receptive field of its convolutions and local pools, applied in the order they
    are registered (as a Sequential runs them): ``1 + sum((k_i - 1) * d_i * j_i)``, ``j_i``
    the product of the earlier strides. Columns more than this far from a cut in the
    input are computed exactly as without the cut, which lets a long spectrogram go
    through the trunk in pieces (:meth:`specnet.network.SpecNet.feature_map`).
    """
    reach, jump = 1, 1
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            reach += (module.kernel_size[1] - 1) * module.dilation[1] * jump
            jump *= module.stride[1]
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride = (_time_size(module.kernel_size), _time_size(module.stride or module.kernel_size))
            dilation = _time_size(getattr(module, "dilation", 1))
            reach += (kernel - 1) * dilation * jump
            jump *= stride
        elif not (isinstance(module, _POINTWISE) or len(module._modules) > 0):
            return None
    return reach


def _time_size(value: int | Sequence[int]) -> int:
    """The time (last) entry of a 2-d layer's size argument, which may be one int for both."""
    return int(value[-1]) if isinstance(value, Sequence) else int(value)


class ClassifierHead(nn.Module):
    """GlobalPool, dropout, optional hidden dense layers, final linear layer.

    Maps ``(B, in_features, H, W)`` to logits ``(B, num_classes)``, or with
    ``pre_logits=True`` to the vector before the final linear layer,
    ``(B, num_features)``. ``num_classes=0`` replaces the final layer with an
    identity, so ``forward`` returns that vector.

    Children: ``global_pool``, ``drop``, ``hidden`` (``Linear, ReLU, Dropout``
    per hidden layer, possibly empty) and ``fc``.

    Parameters
    ----------
    in_features : int > 0
        Channels of the feature map.
    num_classes : int >= 0
        Number of classes; 0 for no final layer.
    global_pool : {"avg", "max", "avgmax"}
        See :class:`GlobalPool`.
    freq_bands : int > 0
        Frequency bands the pooling keeps apart (see :class:`GlobalPool`);
        the pooled vector has ``in_features * freq_bands`` values.
    drop_rate : float in [0, 1)
        Dropout after pooling and after each hidden layer.
    hidden_dim : int > 0, sequence of int, or None
        Width of the hidden dense layers, none if None.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        global_pool: str = "avg",
        freq_bands: int = 1,
        drop_rate: float = 0.0,
        hidden_dim: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.global_pool = GlobalPool(global_pool, freq_bands=freq_bands)
        # No dropout layer at all when there is none to do (include_top=False, Keras's shape).
        self.drop = nn.Dropout(drop_rate) if check_drop_rate(drop_rate) else nn.Identity()
        self.hidden = nn.Sequential()
        width = in_features * freq_bands
        for dim in normalize_hidden_dim(hidden_dim):
            self.hidden.extend([nn.Linear(width, dim), nn.ReLU(), nn.Dropout(drop_rate)])
            width = dim
        self.num_features = width
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes``."""
        self.fc = final_layer(self.num_features, num_classes)

    def forward(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        x = self.hidden(self.drop(self.global_pool(x)))  # (B, num_features)
        return x if pre_logits else self.fc(x)


def final_layer(in_features: int, num_classes: int) -> nn.Module:
    """A freshly initialised last layer, ``Linear(in_features, num_classes)`` with weights
    drawn from N(0, 0.01²) and zero bias; an identity for ``num_classes=0``."""
    if check_int("num_classes", num_classes, minimum=0) == 0:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes)
    if not fc.weight.is_meta:  # shape-only (meta device): see init_weights
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
    return fc


def classifier_size(num_classes: int | None, include_top: bool) -> int:
    """A model's checked ``num_classes``: required with a classifier, 0 without one
    (``include_top=False``, which refuses any other number rather than drop it)."""
    if not as_flag("include_top", include_top):
        if num_classes not in (None, 0):
            raise ParameterError(f"num_classes={num_classes!r} with include_top=False: there is no classifier; leave num_classes out")
        return 0
    if num_classes is None:
        raise ParameterError("num_classes is required unless include_top=False")
    return check_int("num_classes", num_classes, minimum=0)


def normalize_hidden_dim(hidden_dim: int | Sequence[int] | None) -> list[int]:
    """Return ``hidden_dim`` as a list of widths (empty for None), validated: at most
    :data:`MAX_DEPTH` layers of at most :data:`MAX_WIDTH` units."""
    if hidden_dim is None:
        return []
    dims = list(hidden_dim) if isinstance(hidden_dim, Sequence) and not isinstance(hidden_dim, str) else [hidden_dim]
    if len(dims) > MAX_DEPTH:
        raise ParameterError(f"hidden_dim names {len(dims)} dense layers; at most {MAX_DEPTH}")
    return [check_int("hidden_dim", dim, minimum=1, maximum=MAX_WIDTH) for dim in dims]


def init_weights(module: nn.Module) -> None:
    """torchvision's VGG initialisation: He-normal convs, unit batch norm, small linears.

    A model built on torch's ``meta`` device (shapes only: modelfile checks a file's shapes
    that way) is left as it is: drawing normal values there imports torch's compiler, about
    1.3 s and 150 MB on every model load."""
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class SpectrogramModel(nn.Module):
    """The interface every specnet backbone shares (after timm).

    Subclasses put the convolutional trunk in ``self.features`` (the
    *backbone*); every other parameter belongs to the *head*. They define
    ``forward_features`` and ``forward_head`` and set these attributes:

    ``arch`` : str
        Registry name; ``create_model(model.arch, **model.arch_args)``
        rebuilds the same architecture.
    ``arch_args`` : dict
        The resolved constructor arguments, JSON-serialisable.
    ``num_classes`` : int
        Output size of ``forward``; 0 means no classifier.
    ``num_features`` : int
        Size of the embedding ``forward_head(feats, pre_logits=True)``.
    ``in_chans`` : int
        Input channels.
    ``time_stride`` : int
        Input columns (frames) per output column of ``forward_features``:
        column ``j`` of the feature map starts at input column
        ``j * time_stride``.
    ``first_conv`` : str
        Module path of the first convolution (adapted when pretrained
        weights have another number of input channels).
    """

    arch: str
    arch_args: dict
    num_classes: int
    num_features: int
    in_chans: int
    time_stride: int
    first_conv: str = "features.0"
    features: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(B, C, H', W')`` of inputs ``(B, in_chans, H, W)``; column ``j``
        of it starts at input column ``j * time_stride``."""
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of a feature map from :meth:`forward_features`, or with
        ``pre_logits`` the pooled embedding ``(B, num_features)`` the classifier reads."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_chans, H, W)`` to logits ``(B, num_classes)``.

        Without a classifier (``num_classes=0``) the result is the embedding
        ``(B, num_features)``.
        """
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a new one for ``num_classes`` classes (0: none)."""
        num_classes = check_int("num_classes", num_classes, minimum=0)
        self._replace_final_layer(num_classes)
        self.num_classes = num_classes
        self.arch_args["num_classes"] = num_classes

    def _replace_final_layer(self, num_classes: int) -> None:
        self.head.reset(num_classes)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the convolutional trunk (``self.features``)."""
        return self.features.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the trunk: pooling, dense layers, classifier."""
        trunk = {id(p) for p in self.features.parameters()}
        return (p for p in self.parameters() if id(p) not in trunk)
