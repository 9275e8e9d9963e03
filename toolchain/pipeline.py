"""The stage graph and the run directory: atomic stage outputs, stage records, resume.

A run directory (``runs/<name>/``) holds one folder per stage. A stage writes into a temporary
folder (``.<stage>.tmp-*``) that is renamed to ``<stage>/`` only after the stage function returned
and its ``stage.json`` record was written, so a stage that raises or is killed leaves no folder that
looks complete. Re-running skips every stage whose record matches (same config, seed and inputs,
where inputs include the upstream stages' output hashes) and whose outputs still match the sha256
in its record, and resumes at the first that does not; a stage whose outputs changed on disk
re-runs, and so does every stage that depends on it. The lock file and the empty checkpoint
folder are removed when the run directory is closed.

Training stages may keep checkpoints in ``ctx.checkpoint_dir``: it survives a failure or a kill
(so the next attempt resumes inside the stage) and is deleted once the stage completes.

Under torchrun (:mod:`toolchain.distributed`) every rank walks the same stages; rank 0 alone
locks the run directory, decides what is up to date and writes outputs and records. A stage
marked ``distributed`` (a training stage) runs on every rank, the others writing into a scratch
folder that is deleted and reading checkpoints from the shared ``ctx.checkpoint_dir``; any other
stage runs on rank 0 while the others wait for its record. A killed rank's run resumes like a
killed process's: re-launched, every rank reloads the stage's last checkpoint.

Example::

    def train(ctx: StageContext) -> dict:
        (ctx.out_dir / "model.txt").write_text("weights")
        return {"accuracy": 0.9}

    run = RunDir("runs/demo")
    run.run([Stage("train", train, config={"lr": 1e-3})])   # runs
    run.run([Stage("train", train, config={"lr": 1e-3})])   # skipped: record matches
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import distributed as dist
from toolchain.errors import EdgecError, StageError
from toolchain.version import __version__

log = logging.getLogger(__name__)

RECORD_NAME = "stage.json"
RECORD_SCHEMA = 1
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


@dataclass
class StageContext:
    """What a stage function gets: where to write, its config and its inputs."""

    name: str
    run_dir: Path
    out_dir: Path  # temporary folder; becomes run_dir/<name> on success
    checkpoint_dir: Path  # survives failures; removed on success
    config: Any
    seed: int
    inputs: dict[str, Path]  # upstream stage name -> its completed folder
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One step of a pipeline.

    Args:
        name: folder name in the run directory (a-z, 0-9, '-', '_').
        fn: ``fn(ctx) -> metrics dict | None``; writes its outputs under ``ctx.out_dir``.
        config: a stage config dataclass or any JSON-able value; part of the record's identity.
        depends: names of earlier stages whose outputs this stage reads.
        inputs: external files or folders (a model directory, a data file) hashed into the record.
        distributed: under torchrun, ``fn`` runs on every rank (a data-parallel training stage);
            otherwise on rank 0 alone. Either way only rank 0's outputs are kept.
    """

    name: str
    fn: Callable[[StageContext], dict | None]
    config: Any = None
    depends: tuple[str, ...] = ()
    inputs: tuple[Path, ...] = ()
    distributed: bool = False


@dataclass(frozen=True)
class StageResult:
    name: str
    status: str  # "ran" or "skipped"
    path: Path
    record: dict


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__name__, **_jsonable(dataclasses.asdict(value))}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"stage config holds a {type(value).__name__}, which has no JSON form")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_path(path: Path) -> str:
    """Content hash of a file, or of a folder (relative paths and file contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    if not path.is_dir():
        raise EdgecError(f"stage input not found: {path}")
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + _sha256_file(p).encode())
    return h.hexdigest()


def _list_outputs(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = p.relative_to(folder).as_posix()
        if rel != RECORD_NAME:
            out[rel] = {"size": p.stat().st_size, "sha256": _sha256_file(p)}
    return out


def _versions() -> dict[str, str]:
    """Versions of the stack; only modules already imported are asked (importing costs seconds)."""
    versions = {"edgec": __version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "onnx", "onnxruntime", "numpy"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return versions


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``final`` with renames only (each atomic).

    An existing ``final`` is moved aside first and deleted only after ``tmp`` took its place, so
    at every moment ``final`` is either the old complete folder, absent, or the new one.
    """
    old = None
    if final.exists():
        old = final.parent / f".{final.name}{_OLD_TAG}{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_single(stage: Stage, out: Path, *, seed: int = 0, force: bool = False) -> StageResult:
    """Run one stage whose output folder is ``out`` itself (``edgec teacher -o DIR``): the record
    lives in ``out``, the lock and checkpoints beside it as ``.<name>.lock/.checkpoints``."""
    if stage.name != out.name:
        raise StageError(f"stage '{stage.name}' must be named after its folder '{out.name}'")
    with RunDir(out.parent, state_prefix=f".{out.name}") as run_dir:
        (result,) = run_dir.run([stage], seed=seed, force=[out.name] if force else [])
    return result


class RunDir:
    """A run directory, locked for the lifetime of this object.

    Opening it takes an exclusive lock (a second ``edgec build`` on the same folder is refused)
    and removes what a killed earlier run left behind (temporary stage folders).
    """

    def __init__(self, path: str | Path, *, state_prefix: str = ""):
        """Open (and lock) the run directory ``path``.

        Args:
            state_prefix: prefix of the lock file and checkpoint folder; lets a single-stage verb
                (``edgec teacher -o DIR``) use DIR's parent without claiming it whole.
        """
        self.path = Path(path)
        self._state = state_prefix
        self._lock_path = self.path / f"{state_prefix}.lock"
        self._lock_file = None
        if not dist.is_main():  # rank 0 holds the lock and writes; the other ranks only read
            return
        self.path.mkdir(parents=True, exist_ok=True)
        while True:  # the lock file is removed on close: lock it, then check it is still there
            self._lock_file = self._lock_path.open("a+")
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise EdgecError(
                    f"run directory {self.path} is in use by another edgec process; wait for it "
                    "to finish or pick another output directory"
                ) from None
            if _same_file(self._lock_file, self._lock_path):
                break
            self._lock_file.close()  # its owner removed it while we opened it: take a new one
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()
        self._clean_leftovers()

    def close(self) -> None:
        """Release the lock; remove the lock file and an empty checkpoint folder."""
        if self._lock_file is not None and not self._lock_file.closed:
            ckpts = self.path / f"{self._state}.checkpoints"
            try:
                ckpts.rmdir()  # only when empty: a failed stage's checkpoints stay for resume
            except OSError:
                pass
            try:  # removed while still locked, so no other process holds this file's lock
                self._lock_path.unlink()
            except OSError:
                pass
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- records ---------------------------------------------------------------------------
    def stage_dir(self, name: str) -> Path:
        return self.path / name

    def checkpoint_dir(self, name: str, input_hash: str) -> Path:
        return self.path / f"{self._state}.checkpoints" / f"{name}-{input_hash[:16]}"

    def record(self, name: str) -> dict | None:
        """The stage's record, or None if the stage has no complete output."""
        path = self.stage_dir(name) / RECORD_NAME
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if record.get("status") == "complete" else None

    def input_hash(self, stage: Stage, seed: int) -> str:
        """Identity of a stage run: config, seed, upstream outputs, external input contents."""
        upstream = {}
        for dep in stage.depends:
            rec = self.record(dep)
            if rec is None:
                raise StageError(f"stage '{stage.name}' needs '{dep}', which has not completed")
            upstream[dep] = rec["output_hash"]
        ident = {
            "stage": stage.name,
            "config": _jsonable(stage.config),
            "seed": seed,
            "upstream": upstream,
            "inputs": {str(p): hash_path(Path(p)) for p in stage.inputs},
        }
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    # -- running ---------------------------------------------------------------------------
    def run(
        self, stages: Sequence[Stage], *, seed: int = 0, force: Iterable[str] = ()
    ) -> list[StageResult]:
        """Run ``stages`` in order, skipping those whose record matches.

        Args:
            stages: in dependency order (a stage may depend only on stages before it, or on
                stages of this run directory that completed in an earlier call).
            seed: recorded and part of every stage's identity.
            force: stage names to re-run even if their record matches (``--force-stage``).

        Raises:
            StageError: a stage failed (its partial output is removed) or the graph is invalid.
        """
        force = set(force)
        names = [s.name for s in stages]
        unknown = force - set(names)
        if unknown:
            raise StageError(
                f"--force-stage {', '.join(sorted(unknown))}: no such stage; stages: "
                + ", ".join(names)
            )
        self._check_graph(stages)
        results = []
        tainted: set[str] = set()  # stages re-run because their outputs changed on disk
        for stage in stages:
            # rank 0 decides (the others would race its writes) and tells the others
            ihash, skip = dist.on_main(lambda s=stage: self._decide(s, seed, force, tainted))
            if skip:
                record = self.record(stage.name)
                results.append(
                    StageResult(stage.name, "skipped", self.stage_dir(stage.name), record)
                )
                continue
            if stage.distributed and not dist.is_main():
                self._run_scratch(stage, ihash, seed)
            record = dist.on_main(
                lambda s=stage, h=ihash: self._run_one(s, h, seed), alone=not stage.distributed
            )
            results.append(StageResult(stage.name, "ran", self.stage_dir(stage.name), record))
        return results

    def _decide(self, stage: Stage, seed: int, force: set, tainted: set) -> tuple[str, bool]:
        """``(input hash, whether the stage is up to date)``; adds a re-run stage whose outputs
        changed on disk (or that depends on one) to ``tainted``."""
        ihash = self.input_hash(stage, seed)
        record = self.record(stage.name)
        after = sorted(tainted & set(stage.depends))
        if after:
            log.warning(
                "stage %s: re-running, it comes after %s, whose outputs had changed on disk",
                stage.name,
                ", ".join(after),
            )
            tainted.add(stage.name)
        elif stage.name not in force and record and record.get("input_hash") == ihash:
            changed = self._changed_outputs(stage.name, record)
            if not changed:
                log.info("stage %s: up to date, skipped", stage.name)
                return ihash, True
            log.warning(
                "stage %s: %s changed on disk since its record (sha256); re-running it and "
                "every stage that depends on it",
                stage.name,
                changed,
            )
            tainted.add(stage.name)
        return ihash, False

    def _run_scratch(self, stage: Stage, ihash: str, seed: int) -> None:
        """A distributed stage on a rank other than 0: it trains with the others and writes into
        a scratch folder that is deleted; checkpoints are read from rank 0's folder."""
        tmp = Path(tempfile.mkdtemp(prefix=f"edgec-{stage.name}-rank{dist.rank()}-"))
        ctx = self._context(stage, tmp, self.checkpoint_dir(stage.name, ihash), seed)
        try:
            stage.fn(ctx)
        except EdgecError as e:
            raise StageError(f"stage '{stage.name}' failed on rank {dist.rank()}: {e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_graph(self, stages: Sequence[Stage]) -> None:
        seen: set[str] = set()
        for stage in stages:
            if stage.name in seen:
                raise StageError(f"stage '{stage.name}' appears twice")
            ok = all(c.isalnum() or c in "-_." for c in stage.name)
            if not stage.name or stage.name.startswith(".") or not ok:
                raise StageError(f"stage name {stage.name!r}: use a-z, 0-9, '-', '_', '.'")
            for dep in stage.depends:  # run before it here, or completed in an earlier call
                if dep not in seen and self.record(dep) is None:
                    raise StageError(
                        f"stage '{stage.name}' depends on '{dep}', which does not run before it"
                    )
            seen.add(stage.name)

    def _changed_outputs(self, name: str, record: dict) -> str | None:
        """The first output that no longer matches the record's size and sha256 (missing,
        resized, or same size with other bytes), or None when every output matches."""
        folder = self.stage_dir(name)
        for rel, meta in record.get("outputs", {}).items():
            path = folder / rel
            if not path.is_file():
                return f"{rel} (missing)"
            if path.stat().st_size != meta.get("size") or _sha256_file(path) != meta.get("sha256"):
                return rel
        return None

    def _run_one(self, stage: Stage, ihash: str, seed: int) -> dict:
        tmp = self.path / f".{stage.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        ckpt = self.checkpoint_dir(stage.name, ihash)
        ckpt.mkdir(parents=True, exist_ok=True)
        ctx = self._context(stage, tmp, ckpt, seed)
        log.info("stage %s: running", stage.name)
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        try:
            returned = stage.fn(ctx)
            metrics = {**ctx.metrics, **(returned or {})}
            record = {
                "schema": RECORD_SCHEMA,
                "stage": stage.name,
                "status": "complete",
                "config": _jsonable(stage.config),
                "input_hash": ihash,
                "depends": list(stage.depends),
                "inputs": [str(p) for p in stage.inputs],
                "outputs": _list_outputs(tmp),
                "metrics": _jsonable(metrics),
                "seed": seed,
                "wall_s": round(time.perf_counter() - t0, 3),
                "started": started.isoformat(timespec="seconds"),
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(),
                "host": platform.node(),
            }
            if stage.distributed and dist.active():
                record["ranks"] = dist.describe()
            record["output_hash"] = hashlib.sha256(
                json.dumps(record["outputs"], sort_keys=True).encode()
            ).hexdigest()
            self._write_record(tmp, record)
            replace_dir(tmp, self.stage_dir(stage.name))
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                log.warning("stage %s: interrupted; its partial output was removed", stage.name)
                raise
            if isinstance(e, EdgecError):
                raise StageError(f"stage '{stage.name}' failed: {e}") from e
            raise StageError(
                f"stage '{stage.name}' failed with {type(e).__name__}: {e} "
                "(its partial output was removed; re-run to resume from this stage)"
            ) from e
        self._drop_checkpoints(stage.name)
        log.info("stage %s: done in %.1f s", stage.name, record["wall_s"])
        return record

    def _context(self, stage: Stage, out_dir: Path, ckpt: Path, seed: int) -> StageContext:
        return StageContext(
            name=stage.name,
            run_dir=self.path,
            out_dir=out_dir,
            checkpoint_dir=ckpt,
            config=stage.config,
            seed=seed,
            inputs={dep: self.stage_dir(dep) for dep in stage.depends},
        )

    def _drop_checkpoints(self, name: str) -> None:
        """After success, remove the stage's checkpoints (also those of older configs)."""
        root = self.path / f"{self._state}.checkpoints"
        if not root.is_dir():
            return
        for p in root.iterdir():
            head, _, tail = p.name.rpartition("-")
            if head == name and len(tail) == 16:
                shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def _write_record(folder: Path, record: dict) -> None:
        path = folder / RECORD_NAME
        with path.open("w") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    def _clean_leftovers(self) -> None:
        """Remove temporary and superseded stage folders left by a killed run: those whose owning
        process (its pid is in the name) is gone, so a concurrent writer is never disturbed."""
        for p in self.path.iterdir():
            if not (p.name.startswith(".") and p.is_dir()):
                continue
            if _TMP_TAG in p.name and not _pid_alive(p.name.split(_TMP_TAG, 1)[1]):
                log.info("removing leftover %s from an interrupted run", p.name)
                shutil.rmtree(p, ignore_errors=True)
            elif _OLD_TAG in p.name:  # superseded output whose replacement was interrupted
                shutil.rmtree(p, ignore_errors=True)


def _same_file(handle, path: Path) -> bool:
    """Whether the open ``handle`` is still the file at ``path`` (not removed or replaced)."""
    try:
        here, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _pid_alive(tail: str) -> bool:
    """``tail`` is '<pid>-<random>' from a temporary folder name."""
    try:
        pid = int(tail.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # our own leftovers: nothing of ours is in flight while we open the dir
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
