"""Where the device profiles live, and their names and aliases read without pyyaml.

A device with only ``edgec[runtime]`` (onnxruntime, numpy, tokenizers) runs `edgec agent
--device NAME`, which answers as a profile's name: the two top-level keys it needs (``name:`` and
a flow-style ``aliases: [a, b]``) are read line by line here, since pyyaml, which
:mod:`toolchain.devices.profiles` loads every other key with, is not installed there. A test checks
that this reading agrees with the full loader on every built-in profile.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROFILE_PATH_ENV = "EDGEC_PROFILE_PATH"  # extra profile folders, os.pathsep-separated
_KEY = re.compile(r"^(name|aliases):\s*(.*?)\s*(#.*)?$")


def builtin_profiles_dir() -> Path:
    """The profiles shipped with edgec: inside the installed package, or ``profiles/`` of a
    source checkout (editable install)."""
    package = Path(__file__).resolve().parents[1]  # toolchain/
    installed = package / "device_profiles"
    if installed.is_dir():
        return installed
    return package.parent / "profiles"


def profile_dirs() -> tuple[Path, ...]:
    """Folders searched for profiles: ``$EDGEC_PROFILE_PATH`` entries first, then the built-ins."""
    extra = [Path(p) for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p]
    return (*extra, builtin_profiles_dir())


def profile_names() -> dict[str, str]:
    """``{name or alias: profile name}`` of every profile file, from its top-level ``name:`` and
    ``aliases:`` lines (earlier folders win, as in the full loader)."""
    out: dict[str, str] = {}
    for folder in reversed(profile_dirs()):
        for path in sorted(folder.glob("*.yaml")):
            keys = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                m = _KEY.match(line)
                if m:
                    keys[m.group(1)] = m.group(2)
            name = keys.get("name", path.stem).strip("'\"")
            aliases = keys.get("aliases", "[]").strip("[]")
            for label in (name, *(a.strip().strip("'\"") for a in aliases.split(","))):
                if label:
                    out[label.lower()] = name
    return out
