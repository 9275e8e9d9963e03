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

from toolchain.config import Recipe, load_recipe
from toolchain.devices.budgets import resolve_recipe
from toolchain.devices.profiles import get_profile, list_profiles, resolve_device
from toolchain.errors import ConfigError, EdgecError, StageError, UnknownDeviceError
from toolchain.pipeline import RunDir, Stage, StageContext
from toolchain.version import __version__


def __getattr__(name: str):
    # `toolchain.build(...)`: the API module is imported on first use, so `import toolchain`
    # stays cheap (PEP 562)
    if name == "build":
        from toolchain.api import build

        return build
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
