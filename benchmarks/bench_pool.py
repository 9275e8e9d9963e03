"""A pool of two `edgec agent` s measuring real search candidates at once, one agent killed
(SIGKILL) mid-run: which agent measured each candidate, and the killed agent's work finished by the
other. Writes ``benchmarks/results/pool.json`` and ``pool.md``.

    python benchmarks/bench_pool.py --candidates 8

The candidates are subnets of the installed all-MiniLM-L6-v2 (a supernet over it, as the search
builds, with random distinct architectures), each exported as fp32 ONNX and bundled on this
machine, as :meth:`toolchain.target.DeviceTarget.measure_candidates` does. Agents run on loopback
(``python -m toolchain agent``, each a subprocess in its own process group; each measurement 1
thread), so they share this host's cores: the figures show the pool's scheduling and failover, not
a device's latency. Three runs of the same bundles: one agent alone (the baseline); the pool of two;
the pool of two where agent B's process group (the agent and its measuring process: a board losing
power) is killed with SIGKILL ``--kill-after`` seconds into its ``--kill-at``-th measurement (its
measuring process seen in /proc). Every upload is recorded (agent, bundle, start, end, outcome),
the failed one on B included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_distill import environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TOKEN = "bench-pool-token-0123"
SHAPE = (1, 128)


@contextlib.contextmanager
def agent(folder: Path, name: str, on_line=None):
    """`python -m toolchain agent` on a free loopback port; yields ``(url, process)``. Its log
    lines go to ``folder/NAME.log`` and, one by one, to ``on_line``."""
    log = (folder / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolchain", "agent", "--port", "0", "--token-file",
         str(folder / "token"), "--device", "host"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"agent {name} did not start: {proc.stderr.read()}")
    url = "http://" + line.split("listening on ")[1].split(" as ")[0]

    def drain():
        for text in proc.stderr:
            log.write(text)
            log.flush()
            if on_line:
                on_line(text)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=5)
        log.close()


def candidates(n: int, folder: Path, target) -> list[dict]:
    """``n`` distinct subnets of MiniLM-L6 (the largest, the smallest, the rest random), each
    exported as fp32 ONNX and bundled here: ``{"arch", "params", "mb", "bundle"}``."""
    import torch

    from toolchain.bundle.build import build_bundle
    from toolchain.data.tasks import get_task
    from toolchain.export.timing import timing_onnx
    from toolchain.models.loading import load_model
    from toolchain.nas.supernet import SuperNet

    teacher = load_model("default", head="sequence-classification", num_labels=2)
    s = teacher.shape
    scores = {"hidden": torch.ones(s.hidden), "heads": torch.ones(s.layers, s.heads),
              "ffn": torch.ones(s.layers, s.ffn)}  # fmt: skip
    net = SuperNet.from_teacher(teacher, scores).eval()
    archs, rng = [net.space.largest(), net.space.smallest()], random.Random(0)
    while len(archs) < n:
        if (a := net.space.sample(rng)) not in archs:
            archs.append(a)
    out = []
    for i, arch in enumerate(archs[:n]):
        student = net.extract(arch)
        student.tokenizer = teacher.tokenizer
        export = folder / f"c{i}"
        timing_onnx(student, export, "fp32")
        student.tokenizer.save_pretrained(export)
        bundle = folder / f"c{i}.edgec"
        build_bundle(export, bundle, target=target, spec=get_task("sst2"), tarball=False)
        mb = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
        out.append({"arch": str(arch), "params": student.num_parameters(), "mb": round(mb, 1),
                    "bundle": bundle})  # fmt: skip
        print(f"candidate {i}: {arch} ({mb:.0f} MB bundle)", flush=True)
    return out


class Attempts:
    """Every upload the pool makes: (bundle, agent, start, end, outcome), times from ``t0``."""

    def __init__(self, t0: float):
        self.t0, self.rows, self.lock = t0, [], threading.Lock()

    @contextlib.contextmanager
    def recording(self):
        import toolchain.profile.pool as pool

        real = pool.profile_remote

        def recorded(bundle, url, **kw):
            row = {"bundle": Path(bundle).stem, "agent": url, "start_s": self.now()}
            try:
                report = real(bundle, url, **kw)
                row["outcome"] = "measured"
                return report
            except Exception as e:
                row["outcome"] = f"failed: {e}"
                raise
            finally:
                row["end_s"] = self.now()
                with self.lock:
                    self.rows.append(row)

        pool.profile_remote = recorded
        try:
            yield self
        finally:
            pool.profile_remote = real

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 2)


def run_pool(work: Path, cands: list[dict], overrides, kill: tuple[int, float] | None) -> dict:
    """Two agents, A and B; with ``kill = (n, s)``, B's process group is killed ``s`` seconds
    into its ``n``-th measurement."""
    from toolchain.target import DeviceTarget

    attempts, killed = Attempts(time.perf_counter()), {}
    warnings = _capture("toolchain.profile.pool")
    with agent(work, "A") as (url_a, _), agent(work, "B") as (url_b, proc_b):
        target = DeviceTarget.resolve("host", agent_url=[url_a, url_b],
                                      token_file=work / "token", overrides=overrides)  # fmt: skip
        if kill:
            threading.Thread(target=_killer, args=(proc_b, *kill, attempts, killed),
                             daemon=True).start()  # fmt: skip
        t0 = attempts.t0 = time.perf_counter()
        with attempts.recording():
            reports = target.measure_many((c["bundle"], [SHAPE]) for c in cands)
        wall = time.perf_counter() - t0
        down = target.pool.down
    return {
        "agents": {"A": url_a, "B": url_b},
        "wall_s": round(wall, 2),
        "b_measuring_seen_s": killed.get("seen_s"),
        "b_killed_s": killed.get("kill_s"),
        "down": down,
        "warnings": [w for w in warnings if "down" in w],
        "attempts": attempts.rows,
        "rows": [_row(c, r, t0) for c, r in zip(cands, reports, strict=True)],
    }


def _killer(proc, nth: int, after: float, attempts: Attempts, killed: dict) -> None:
    """SIGKILL ``proc``'s process group ``after`` s after its ``nth`` child (a measuring process)
    appears; polls /proc every 20 ms."""
    seen: set[int] = set()
    while proc.poll() is None and len(seen) < nth:
        seen |= _children(proc.pid)
        time.sleep(0.02)
    if proc.poll() is not None:
        return
    killed["seen_s"] = attempts.now()
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    killed["kill_s"] = attempts.now()
    print(f"SIGKILL agent B (and its measuring process) at {killed['kill_s']} s", flush=True)


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def run_alone(work: Path, cands: list[dict], overrides) -> dict:
    """The baseline: agent A alone measures every candidate, one after another."""
    from toolchain.target import DeviceTarget

    with agent(work, "alone") as (url, _):
        target = DeviceTarget.resolve("host", agent_url=url, token_file=work / "token",
                                      overrides=overrides)  # fmt: skip
        t0 = time.perf_counter()
        reports = target.measure_many((c["bundle"], [SHAPE]) for c in cands)
        wall = time.perf_counter() - t0
    return {"agent": url, "wall_s": round(wall, 2),
            "rows": [_row(c, r, t0) for c, r in zip(cands, reports, strict=True)]}  # fmt: skip


def _row(cand: dict, report: dict, t0: float) -> dict:
    r = report["results"][0]
    wall0 = time.time() - (time.perf_counter() - t0)  # the agents' clock is this host's
    return {
        "bundle": cand["bundle"].stem,
        "arch": cand["arch"],
        "params": cand["params"],
        "mb": cand["mb"],
        "agent": report["agent"],
        "label": report["label"],
        "p50_ms": round(r["p50_ms"], 2),
        "p90_ms": round(r["p90_ms"], 2),
        "measure_start_s": round(report["started"] - wall0, 2),
        "measure_end_s": round(report["finished"] - wall0, 2),
    }


def _capture(logger: str) -> list[str]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger(logger).addHandler(Keep(logging.WARNING))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=8, help="subnets measured (>= 6)")
    parser.add_argument("--kill-at", type=int, default=2, help="kill B in its Nth measurement")
    parser.add_argument("--kill-after", type=float, default=0.3,
                        help="seconds into that measurement")  # fmt: skip
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    from toolchain.config import ProfileConfig
    from toolchain.log import setup_logging
    from toolchain.target import DeviceTarget

    setup_logging(bars=False)
    overrides = ProfileConfig(warmup=5, iterations=30, repeats=1, threads=1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-bench-pool-") as tmp:
        work = Path(tmp)
        (work / "token").write_text(TOKEN + "\n")
        (work / "token").chmod(0o600)
        t = time.perf_counter()
        cands = candidates(args.candidates, work, DeviceTarget.resolve("host"))
        export_s = time.perf_counter() - t
        alone = run_alone(work, cands, overrides)
        both = run_pool(work, cands, overrides, kill=None)
        pool = run_pool(work, cands, overrides, kill=(args.kill_at, args.kill_after))
    result = {
        "command": "python benchmarks/bench_pool.py " + " ".join(sys.argv[1:]),
        "environment": environment(),
        "protocol": {
            "shape": list(SHAPE),
            "warmup": 5,
            "iterations": 30,
            "repeats": 1,
            "threads": 1,
            "runtime": "onnxruntime (CPU)",
        },  # fmt: skip
        "export_and_bundle_s": round(export_s, 1),
        "alone": alone,
        "pool_no_failure": both,
        "pool": pool,
    }
    result["checks"] = checks(result)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "pool.md").write_text(markdown(result))
    print(json.dumps(result["checks"], indent=1))
    return 0 if all(v is True for v in result["checks"].values() if isinstance(v, bool)) else 1


def checks(result: dict) -> dict:
    pool, both, alone_s = result["pool"], result["pool_no_failure"], result["alone"]["wall_s"]
    a, b = pool["agents"]["A"], pool["agents"]["B"]
    rows, kill = pool["rows"], pool["b_killed_s"]
    failed_on_b = [x for x in pool["attempts"] if x["agent"] == b and x["outcome"] != "measured"]
    given_back = {x["bundle"] for x in failed_on_b}
    return {
        "every_candidate_measured": len(rows) == len(result["alone"]["rows"]),
        "both_agents_measured_before_the_kill": {r["agent"] for r in rows} == {a, b},
        "b_marked_down": b in pool["down"],
        "nothing_measured_by_b_after_the_kill": all(
            r["measure_end_s"] <= kill for r in rows if r["agent"] == b
        ),
        "b_work_in_flight_finished_by_a": bool(given_back)
        and all(r["agent"] == a for r in rows if r["bundle"] in given_back),
        "given_back": sorted(given_back),
        "speedup_vs_one_agent": round(alone_s / pool["wall_s"], 2),
        "no_failure_both_agents_worked": len({r["agent"] for r in both["rows"]}) == 2,
        "speedup_vs_one_agent_no_failure": round(alone_s / both["wall_s"], 2),
    }


def markdown(result: dict) -> str:
    env, pool, alone = result["environment"], result["pool"], result["alone"]
    both = result["pool_no_failure"]
    count = {k: sum(r["agent"] == u for r in both["rows"]) for k, u in both["agents"].items()}
    names = {v: k for k, v in pool["agents"].items()}
    given_back = set(result["checks"]["given_back"])
    lines = [
        "# Agent pool: candidates measured at once, one agent killed mid-run",
        "",
        f"Command: `{result['command']}` ({result['wall_s']:.0f} s). {env['cpu']}, {env['cores']} "
        f"cores, Python {env['python']}, torch {env['torch']}. Two `edgec agent` s on loopback "
        f"(A {pool['agents']['A']}, B {pool['agents']['B']}), each measurement in a fresh "
        "process with 1 thread at batch 1 x seq 128 (warm-up 5, 30 timed runs): both agents share "
        "this host's cores, so the latencies show the pool at work, not a device.",
        "",
        f"Candidates: subnets of all-MiniLM-L6-v2, exported as fp32 ONNX and bundled here in "
        f"{result['export_and_bundle_s']:.0f} s. One agent alone: {alone['wall_s']:.1f} s. The "
        f"pool of two, no failure: {both['wall_s']:.1f} s "
        f"({result['checks']['speedup_vs_one_agent_no_failure']:.2f}x; A measured {count['A']}, B "
        f"{count['B']}). The pool of two with agent B's process group killed with SIGKILL at "
        f"{pool['b_killed_s']} s, in a measurement (its measuring process seen at "
        f"{pool['b_measuring_seen_s']} s): {pool['wall_s']:.1f} s "
        f"({result['checks']['speedup_vs_one_agent']:.2f}x); that run below. The wall-time "
        "ratios are not a pool's speed-up on separate boards: here both agents, their measuring "
        "processes and this client's packing (tar.gz of each upload) and hashing share the same "
        "cores, and a run's time is mostly that work, not the timed runs.",
        "",
        "| bundle | subnet | params (M) | MB | measured by | p50 ms | p90 ms | alone p50 ms | "
        "measuring s | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, base in zip(pool["rows"], alone["rows"], strict=True):
        note = "B killed while it had this one: given back, measured by A" if r["bundle"] in \
            given_back else ""  # fmt: skip
        lines.append(
            f"| {r['bundle']} | {r['arch']} | {r['params'] / 1e6:.1f} | {r['mb']} | "
            f"{names[r['agent']]} | {r['p50_ms']} | {r['p90_ms']} | {base['p50_ms']} | "
            f"{r['measure_start_s']}-{r['measure_end_s']} | {note} |"
        )
    lines += [
        "",
        "Every upload of the pool run (times from its start):",
        "",
        "| bundle | agent | start s | end s | outcome |",
        "|---|---|---|---|---|",
    ]
    for x in sorted(pool["attempts"], key=lambda x: x["start_s"]):
        outcome = x["outcome"].replace("|", "/")
        lines.append(f"| {x['bundle']} | {names[x['agent']]} | {x['start_s']} | {x['end_s']} | "
                     f"{outcome} |")  # fmt: skip
    lines += ["", "Warnings:", ""] + [f"- {w}" for w in pool["warnings"]]
    lines += ["", "## Checks", "", "```", json.dumps(result["checks"], indent=1), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
