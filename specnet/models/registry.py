"""Model registry: build any model family by name (after timm's ``create_model``)."""

from __future__ import annotations

import fnmatch
import inspect
import os
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ParameterError
from .pretrained import IMAGENET_FILES, load_imagenet_weights

__all__ = ["create_model", "is_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

ModelFn = typing.TypeVar("ModelFn", bound=Callable[..., nn.Module])


def register_model(fn: ModelFn) -> ModelFn:
    """Register a model factory under its function name.

    The factory takes keyword arguments only and returns the model; its
    return annotation names the model class, whose constructor arguments
    :func:`create_model` accepts.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell pattern (``"vgg*"``)."""
    names = sorted(_MODELS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS


def _check_kwargs(name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    model_cls = typing.get_type_hints(fn).get("return")
    if model_cls is None:
        return
    valid = list(inspect.signature(model_cls).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ParameterError(
            f"{name} has no option {', '.join(unknown)}; valid options are {', '.join(valid)}"
        )


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 1,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        Registered name, see :func:`list_models`.
    num_classes : int >= 0
        Number of classes (0: no classifier). Required unless
        ``include_top=False`` is passed.
    in_chans : int > 0
        Input channels (1 for a spectrogram, 3 for an RGB image).
    pretrained : bool
        Load ImageNet weights (VGG models only), see
        :func:`~specnet.models.pretrained.load_imagenet_weights`.
    weights : path or None
        ImageNet weight file (or folder holding it) to load instead of the
        cache or a download; implies ``pretrained``.
    **kwargs
        Constructor options of the model class (``drop_rate``,
        ``hidden_dim``, ``head``, ``include_top``, ...).

    Returns
    -------
    nn.Module
        The model, with ``arch`` set to ``name`` so that
        ``create_model(model.arch, **model.arch_args)`` rebuilds it.
    """
    fn = _MODELS.get(name)
    if fn is None:
        raise ParameterError(f"unknown architecture {name!r}; valid names are {', '.join(list_models())}")
    _check_kwargs(name, fn, {"num_classes": num_classes, "in_chans": in_chans, **kwargs})
    if (pretrained or weights is not None) and name not in IMAGENET_FILES:
        raise ParameterError(
            f"{name} has no ImageNet weights; pretrained=True and weights= work with "
            f"{', '.join(sorted(IMAGENET_FILES))}"
        )
    model = fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    built = getattr(model, "arch", name)  # what the options made: vgg11 with batch_norm=True is a vgg11_bn
    model.arch = name
    if pretrained or weights is not None:
        load_imagenet_weights(model, arch=built, weights=weights)
    return model
