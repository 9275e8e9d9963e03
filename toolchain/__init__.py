"""edgec: compressed transformers for edge devices (distil, quantize, search, export, profile,
bundle).

Importing ``toolchain`` is cheap and never touches CUDA, onnxruntime or tensorrt (nor torch):
stages import their heavy dependencies when they run.

Example::

    >>> import toolchain
    >>> recipe = toolchain.load_recipe(None, overrides={"device": "raspberry-pi-5"})
    >>> toolchain.get_profile(recipe.device).budgets[0].latency_ms
    25.0
"""

__version__ = "0.1.0"

from toolchain.config import Recipe, load_recipe, resolve_recipe  # noqa: E402
from toolchain.errors import ConfigError, EdgecError, StageError, UnknownDeviceError  # noqa: E402
from toolchain.pipeline import RunDir, Stage, StageContext  # noqa: E402
from toolchain.profile.devices import get_profile, list_profiles, resolve_device  # noqa: E402

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
    "get_profile",
    "list_profiles",
    "load_recipe",
    "resolve_device",
    "resolve_recipe",
]
