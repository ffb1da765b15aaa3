"""specnet: classify audio (and images) with CNNs over mel-spectrograms.

The public API is imported lazily (PEP 562), so ``import specnet`` and
``specnet --help`` stay fast and never import torch until it is needed::

    import specnet
    model = specnet.load_model()              # the bundled ESC-10 model
    model.predict("dog.wav")[0].predictions   # [{"label": "dog", "score": 0.88...}, ...]
    model.embed(["a.wav", "b.wav"])           # (2, dim) clip embeddings
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__
from .errors import AudioError, DataError, ImageError, ModelFileError, ParameterError, SpecnetError, TrainingError

_LAZY = {
    "load_audio": "audio",
    "iter_audio_blocks": "audio",
    "audio_info": "audio",
    "load_image": "image",
    "find_inputs": "paths",
    "FeatureConfig": "featureconfig",
    "MelSpectrogram": "features",
    "LogMelSpectrogram": "features",
    "create_model": "models",
    "list_models": "models",
    "summary": "models",
    "load_model": "inference",
    "bundled_models": "catalog",
    "Model": "inference",
    "Prediction": "inference",
    "Failure": "inference",
    "train": "training",
    "TrainConfig": "trainconfig",
    "evaluate": "evaluation",
    "plot_confusion": "plots",
    "export_onnx": "export",
    "SpecNet": "network",
    "ModelSpec": "modelspec",
}

__all__ = [
    "__version__", "SpecnetError", "AudioError", "DataError", "ImageError", "ModelFileError", "ParameterError", "TrainingError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'specnet' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
