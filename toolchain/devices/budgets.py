"""Budgets named by the user, resolved against a device profile, and the recipe that names them.

One place resolves a budget (a name of the profile's, or a custom :class:`BudgetSpec`):
:func:`resolve_budgets`, used by :func:`resolve_recipe` and every stage that takes budgets.

Example::

    >>> from toolchain.devices.profiles import get_profile
    >>> [b.name for b in resolve_budgets(get_profile("jetson"), ["tight"])]
    ['tight']
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from toolchain import schema
from toolchain.config import DATA_DIR_ENV, BudgetSpec, Recipe
from toolchain.devices.profiles import DeviceProfile, resolve_device
from toolchain.errors import ConfigError


def resolve_budgets(
    profile: DeviceProfile,
    wanted: Iterable[str | BudgetSpec] = (),
    *,
    file: str | None = None,
    generation: bool = False,
) -> tuple[BudgetSpec, ...]:
    """The budgets ``wanted`` (profile budget names or custom specs); every budget of the profile
    when ``wanted`` is empty. ``generation``: the profile's generation budgets (decoder LMs:
    time to first token, decode tokens/s, memory with the KV cache) instead.

    Raises:
        ConfigError: a name the profile does not have (the closest name suggested).
    """
    by_name = {b.name: b for b in (profile.generation_budgets if generation else profile.budgets)}
    wanted = tuple(wanted) or tuple(by_name)
    if not wanted:
        what = "generation budgets" if generation else "budgets"
        raise ConfigError(
            f"{profile.name} has no {what}; name one with --budget"
            + (" as {name, latency_ms (TTFT), decode_tok_s, context_len, memory_mb}"
               if generation else ""),
            key="budgets",
        )  # fmt: skip
    for item in wanted:
        if isinstance(item, BudgetSpec) and item.generation != generation:
            raise ConfigError(
                f"budget {item.name!r}: "
                + ("a language model needs a generation budget (set decode_tok_s and "
                   "context_len)" if generation else
                   "decode_tok_s/context_len apply to language models only"),
                key="budgets", file=file,
            )  # fmt: skip
    out: list[BudgetSpec] = []
    for item in wanted:
        if isinstance(item, BudgetSpec):
            out.append(item)
        elif item in by_name:
            out.append(by_name[item])
        else:
            hint = schema.closest(item, by_name)
            did = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"device {profile.name} has no budget '{item}'{did}; its budgets: "
                f"{', '.join(by_name)}; or give a custom one as {{name, latency_ms, memory_mb}}",
                key="budgets",
                file=file,
            )
    return tuple(out)


def resolve_recipe(
    recipe: Recipe,
    *,
    file: str | None = None,
    profile: DeviceProfile | None = None,
    generation: bool = False,
) -> tuple[Recipe, list[str]]:
    """Fill what a recipe leaves implicit, checking it against the device profile.

    The device alias is resolved to its profile name, named budgets are replaced by the profile's
    full budget specs (``()`` becomes every budget of the device), and ``data_dir`` falls back to
    ``$EDGEC_DATA_DIR``. ``profile``: the device already resolved (by a
    :class:`~toolchain.target.DeviceTarget`), so the name is not resolved a second time.
    ``generation``: a decoder LM's build (the profile's generation budgets).

    Returns:
        ``(effective recipe, notes)`` where notes are human-readable lines (e.g. alias resolution).
    """
    notes = []
    if profile is None:
        resolution = resolve_device(recipe.device)
        profile = resolution.profile
        notes = [resolution.note] if resolution.note else []
    budgets = resolve_budgets(profile, recipe.budgets, file=file, generation=generation)
    data_dir = recipe.data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is not None and not Path(data_dir).is_dir():
        origin = "data_dir" if recipe.data_dir else f"${DATA_DIR_ENV}"
        raise ConfigError(
            f"data folder not found: {data_dir} (from {origin}); give a folder with the layout "
            "of shared/data (glue/SST-2/train.tsv, conll2003/train.txt, ...)",
            key="data_dir",
            file=file,
        )
    effective = replace(recipe, device=profile.name, budgets=budgets, data_dir=data_dir)
    return effective, notes


__all__ = ["resolve_budgets", "resolve_recipe"]
