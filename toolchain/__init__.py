"""edgec: compressed transformers for edge devices (distil, quantize, search, export, profile,
bundle).

The Python API is :mod:`toolchain.api` (``build``, ``distill``, ``quantize``, ``search``,
``export``, ``bundle``, ``profile``, ``evaluate``); ``toolchain.build`` is the same function as
``toolchain.api.build``. The other verbs are reached as ``toolchain.api.<verb>``: the names
``toolchain.distill``, ``toolchain.quantize``, ... are the stage packages.

Importing ``toolchain`` is cheap and never touches CUDA, onnxruntime or tensorrt (nor torch):
stages import their heavy dependencies when they run, and the API module loads on first use.

Example::

    >>> import toolchain
    >>> recipe = toolchain.load_recipe(None, overrides={"device": "raspberry-pi-5"})
    >>> toolchain.get_profile(recipe.device).budgets[0].latency_ms
    25.0
"""

from toolchain.errors import ConfigError, EdgecError, StageError, UnknownDeviceError
from toolchain.version import __version__

# the rest is imported on first use (PEP 562), so that `edgec run`, `edgec bundle verify` and
# `edgec agent` on a device with only edgec[runtime] (onnxruntime, numpy, tokenizers) never import
# the recipe machinery (pyyaml) nor torch
_LAZY = {
    "Recipe": "toolchain.config",
    "load_recipe": "toolchain.config",
    "resolve_recipe": "toolchain.devices.budgets",
    "get_profile": "toolchain.devices.profiles",
    "list_profiles": "toolchain.devices.profiles",
    "resolve_device": "toolchain.devices.profiles",
    "RunDir": "toolchain.pipeline",
    "Stage": "toolchain.pipeline",
    "StageContext": "toolchain.pipeline",
    "build": "toolchain.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolchain' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "EdgecError",
    "Recipe",
    "RunDir",
    "Stage",
    "StageContext",
    "StageError",
    "UnknownDeviceError",
    "__version__",
    "build",
    "get_profile",
    "list_profiles",
    "load_recipe",
    "resolve_device",
    "resolve_recipe",
]
