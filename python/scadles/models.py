"""models.py: the PyTorch twins of the engine's models, built for a run's model, width and dataset.

The twins themselves live in tests/golden/models.py (one definition, shared with the golden-value
generator, the benchmark peers, the checkpoint interop test and the GPU bundle); this module loads
that file from the repository this package sits in (python/scadles -> ../../tests/golden) and picks
the input shape and class count from the dataset. Needs torch.
"""
import importlib.util
import os

from .errors import ScadlesError
from .safetensors import _torch

TWINS_PATH = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                           "golden", "models.py"))

# dataset -> (channels, height = width, classes): stream/dataset.c
DATASETS = {"fashion-mnist": (1, 28, 10), "mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}

_twins = None


def twins():
    """The module tests/golden/models.py (loaded once)."""
    global _twins
    if _twins is None:
        _torch()  # a clear message when torch is missing, before the twins' own import fails
        if not os.path.exists(TWINS_PATH):
            raise ScadlesError(f"the PyTorch twins are not at {TWINS_PATH}; this package loads them from the "
                               "repository it lives in (keep python/ and tests/golden/ together)")
        spec = importlib.util.spec_from_file_location("scadles._twins", TWINS_PATH)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _twins = mod
    return _twins


def build_twin(model, dataset="fashion-mnist", width=1.0):
    """The twin of `model` (an engine model name) for `dataset` at channel multiplier `width`, in
    training mode with PyTorch's initialisation; returns (module, input shape (c, h, w))."""
    if dataset not in DATASETS:
        raise ScadlesError(f"unknown dataset {dataset!r}; the engine's datasets: {', '.join(DATASETS)}")
    c, size, classes = DATASETS[dataset]
    if not isinstance(width, (int, float)) or not 0 < width <= 16:
        raise ScadlesError(f"width {width!r} is out of range; allowed: a number in (0, 16]")
    try:
        return twins().build(model, classes=classes, width=float(width), in_c=c, size=size)
    except ValueError as e:
        raise ScadlesError(str(e)) from None
