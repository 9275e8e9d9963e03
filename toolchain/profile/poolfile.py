"""The pool file (``--pool FILE``, recipe key ``profile.pool``): the `edgec agent` s a build may
measure on, each with its own token, written once and reused by every build.

Why a file: agents on several boards each have their own token (and, over https://, their own
certificate), which a repeated ``--target`` with one shared ``--token-file`` cannot say; and one
file can list the boards of several kinds, each build using those of its own ``--device``.

Format (YAML, or JSON when the name ends in ``.json``): a list with one mapping per agent::

    - url: http://10.0.0.11:9600
      token_file: tokens/orin-1          # relative paths: against this file's folder
      device: jetson-orin-nano-8gb       # optional: the profile the agent runs on
    - url: https://10.0.0.12:9600
      token_file: tokens/orin-2
      ca_cert: certs/orin-2.crt          # optional: for an https:// agent's own certificate
      device: jetson

An agent whose ``device`` (a name, alias or profile file) is not the build's device is left out of
that build, which says so; one without ``device`` is used for any build.

Example::

    entries = read_pool_file("agents.yaml")          # every path absolute, devices resolved
    mine = agents_for_device(entries, "jetson-orin-nano-8gb", "agents.yaml")
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from toolchain import schema
from toolchain.config import check_agent_url
from toolchain.devices.profiles import resolve_device
from toolchain.errors import ConfigError, EdgecError

log = logging.getLogger(__name__)

EXAMPLE = "- {url: http://HOST:9600, token_file: token, device: jetson}"


@dataclass(frozen=True)
class PoolEntry:
    """One agent of a pool file; after :func:`read_pool_file`, its paths are absolute and
    ``device`` is a profile name (None: not said, used for any device)."""

    url: str
    token_file: str
    ca_cert: str | None = None
    device: str | None = None

    def __post_init__(self):
        check_agent_url(self.url, "url")
        schema.require(bool(self.token_file.strip()), "token_file", "must name the token file")


def read_pool_file(path: str | Path) -> tuple[PoolEntry, ...]:
    """The agents listed in the pool file ``path``: relative paths resolved against its folder,
    each ``device`` resolved to its profile name.

    Raises:
        ConfigError: the file is missing, unreadable, empty, not a list of agents, has an unknown
            or missing key, a bad URL, a device that matches no profile, or a URL twice; the
            message names the file, the item and what to write instead.
    """
    path = Path(path).expanduser()
    text = schema.read_yaml_text(path)
    where = str(path)
    try:
        if path.suffix.lower() == ".json":
            data = _json(text, where)
            entries = schema.list_from_yaml_text(PoolEntry, yaml.safe_dump(data), file=where,
                                                 lines=False)  # fmt: skip
        else:
            entries = schema.list_from_yaml_text(PoolEntry, text, file=where)
    except ConfigError as e:
        raise ConfigError(f"{e.message}; a pool file lists agents, e.g. {EXAMPLE}",
                          key=e.key, file=e.file, line=e.line) from None  # fmt: skip
    if not entries:
        raise ConfigError(f"no agents listed; a pool file lists agents, e.g. {EXAMPLE}", file=where)
    folder = path.resolve().parent
    entries = tuple(_resolved(e, i, folder, where) for i, e in enumerate(entries))
    urls = [e.url.rstrip("/") for e in entries]
    twice = sorted({u for u in urls if urls.count(u) > 1})
    if twice:
        raise ConfigError(f"an agent listed twice: {', '.join(twice)}", file=where)
    return entries


def agents_for_device(
    entries: tuple[PoolEntry, ...], device: str, file: str | Path
) -> tuple[PoolEntry, ...]:
    """The entries that may measure for ``device`` (a profile name): those that run on it or do
    not say; each one left out is logged with the device it runs on.

    Raises:
        ConfigError: none is left.
    """
    kept = tuple(e for e in entries if e.device in (None, device))
    for e in entries:
        if e not in kept:
            log.warning("pool %s: the agent at %s runs on %s, not %s: not used for this build's "
                        "measurements", file, e.url, e.device, device)  # fmt: skip
    if not kept:
        devices = ", ".join(sorted({str(e.device) for e in entries}))
        raise ConfigError(
            f"no agent of the pool runs on {device} (its agents run on {devices}): add agents of "
            f"{device} to the pool, or build for their device with --device",
            file=str(file),
        )
    return kept


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON: {e.msg} (column {e.colno})", file=where,
                          line=e.lineno) from None  # fmt: skip


def _resolved(entry: PoolEntry, index: int, folder: Path, where: str) -> PoolEntry:
    def local(value: str | None) -> str | None:
        return None if value is None else str((folder / Path(value).expanduser()).resolve())

    device = entry.device
    if device is not None:
        if device.endswith((".yaml", ".yml")) or os.sep in device:
            device = local(device)
        try:
            device = resolve_device(device).profile.name
        except EdgecError as e:
            raise ConfigError(str(e), key=f"[{index}].device", file=where) from None
    return replace(entry, token_file=local(entry.token_file), ca_cert=local(entry.ca_cert),
                   device=device)  # fmt: skip


__all__ = ["PoolEntry", "agents_for_device", "read_pool_file"]
