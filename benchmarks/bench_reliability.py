"""How edgec holds up against bad and hostile input: fuzzed files through every reader, probes of
the measurement agent on loopback, and resume after a stage's output changed on disk. Writes
``benchmarks/results/reliability.json`` and ``reliability.md``.

- ``fuzz``: for every target of ``tests/fuzz.py`` (data readers, recipe, ``--set``, device
  profile, bundle manifest, uploaded archive) ``--cases`` inputs, half from the target's
  structured strategy, half arbitrary bytes; a crash is any exception that is not an
  ``EdgecError`` (the typed error bad input must give). Goal: 0 crashes in >= 20,000 cases.
- ``agent_probes``: an agent (trusting one key, 50 members an upload, 1 s deadlines, 2
  connections) served from a thread on 127.0.0.1, and what an attacker or a careless client
  sends it: a path out of the bundle, a flipped manifest, a consistent rewrite without a trusted
  signature, a tar bomb, a ``./`` archive of a signed bundle, a client dripping its headers, one
  connection past the cap, bad Content-Lengths. Goal: every probe gets the expected answer and
  the agent keeps serving.
- ``resume_detects_changed_output``: one byte of a completed stage's output flipped (same size);
  the next run re-runs that stage and every stage after it.

    python benchmarks/bench_reliability.py                 # 20,000+ fuzzed cases, a few minutes
    python benchmarks/bench_reliability.py --cases 100     # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import socket
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the fuzz targets and fake bundles the tests use

TOKEN = "correct-horse-battery"
QUICK = {"shapes": [[1, 8]], "warmup": 1, "iterations": 3, "repeats": 1}


# -- fuzz ---------------------------------------------------------------------------------------
def fuzz_target(name: str, strat, cases: int, seed: int, workdir: Path) -> tuple[int, list[str]]:
    """``cases`` inputs drawn from ``strat`` through ``run_case(name, ...)``: (count, crashes)."""
    from fuzz import run_case
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    crashes: list[str] = []
    count = 0

    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            run_case(name, data, workdir)
        except Exception as e:  # a crash: recorded, the run goes on
            where = traceback.extract_tb(e.__traceback__)[-1]
            crashes.append(f"{type(e).__name__}: {e} ({where.filename}:{where.lineno})")

    run = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every case is counted once
        suppress_health_check=list(HealthCheck),
    )(given(data=strat)(one))
    hseed(seed)(run)()
    return count, crashes


def fuzz(cases: int, seed: int) -> list[dict]:
    """``cases`` inputs per target, half structured, half arbitrary bytes; crashes counted."""
    from fuzz import FUZZ_TARGETS, strategy
    from hypothesis import strategies as st

    rows = []
    for name in FUZZ_TARGETS:
        workdir = Path(tempfile.mkdtemp(prefix=f"edgec-fuzz-{name}-"))
        started = time.perf_counter()
        count, crashes = 0, []
        for strat in (strategy(name), st.binary(max_size=4000)):
            n, found = fuzz_target(name, strat, cases // 2, seed, workdir)
            count, crashes = count + n, crashes + found
        rows.append(
            {
                "target": name,
                "cases": count,
                "crashes": len(crashes),
                "examples": sorted(set(crashes))[:5],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(f"fuzz {name}: {count} cases, {len(crashes)} crashes", flush=True)
    return rows


# -- agent probes -------------------------------------------------------------------------------
@contextlib.contextmanager
def serving(agent):
    thread = threading.Thread(target=agent.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield agent.server_address[1]
    finally:
        agent.shutdown()
        agent.server_close()
        thread.join(timeout=10)


def post(port: int, data: bytes, *, length: str | None = None) -> tuple[int, dict]:
    """POST /measure; ``length`` replaces the Content-Length header (sent over a raw socket)."""
    if length is not None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = (
                f"POST /measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"X-Edgec-Request: {json.dumps(QUICK)}\r\nContent-Length: {length}\r\n\r\n"
            )
            sock.sendall(head.encode() + data)
            return _parse(_read_all(sock))
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/measure",
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Edgec-Request": json.dumps(QUICK)},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _parse(raw: bytes) -> tuple[int, dict]:
    if not raw:
        return 0, {"error": "connection closed without a reply"}
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body or b"{}")
    except json.JSONDecodeError:
        return status, {"error": body[:200].decode(errors="replace")}


def healthy(port: int) -> bool:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read()).get("status") == "ok"
    except OSError:
        return False


def probes(workdir: Path) -> list[dict]:
    from fake_bundle import members_of, rewrite, tar_gz, write_fake_bundle

    from toolchain.bundle.manifest import MANIFEST, ArchiveLimits, pack
    from toolchain.bundle.sign import TrustedKeys, generate_keys, sign_bundle
    from toolchain.profile.agent import Agent
    from toolchain.profile.connections import ConnectionLimits

    workdir.mkdir(parents=True, exist_ok=True)
    generate_keys(workdir / "ours")
    generate_keys(workdir / "theirs")
    agent = Agent(
        "127.0.0.1",
        0,
        token=TOKEN,
        device="probe-device",
        max_upload_mb=16,
        trust=TrustedKeys.load([workdir / "ours.pub"]),
        archive_limits=ArchiveLimits(max_members=50),
        limits=ConnectionLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=2),
    )

    def signed(name: str, *, onnx: bool = False) -> Path:
        folder = write_fake_bundle(workdir / name / "toy.edgec", onnx=onnx)
        sign_bundle(folder, workdir / "ours")
        return folder

    def packed(folder: Path) -> bytes:
        return pack(folder, folder.with_name("toy.edgec.tar.gz")).read_bytes()

    def escape():
        folder = write_fake_bundle(workdir / "escape" / "toy.edgec")
        rewrite(folder, lambda m: m["runtime"].update(model="../../etc/hostname"))
        return post(port, packed(folder))  # (edgec bundle sign refuses to sign it)

    def flip():
        folder = signed("flip")
        text = (folder / MANIFEST).read_text().replace('"neg"', '"nag"')
        (folder / MANIFEST).write_text(text)
        return post(port, packed(folder))

    def rewrite_unsigned():
        folder = signed("rewrite")
        (folder / "model.onnx").write_bytes(b"a model of the tamperer's\n")
        (folder / "signature.json").unlink()
        rewrite(folder)  # every hash and the digest match again
        first = post(port, packed(folder))
        sign_bundle(folder, workdir / "theirs")
        second = post(port, packed(folder))
        return (
            (first[0], {"error": f"{first[1].get('error')} | {second[1].get('error')}"})
            if (first[0] == second[0])
            else second
        )

    def bomb():
        zeros = b"\0" * (8 * 2**20)
        archive = tar_gz(workdir / "bomb.tgz", [("b.edgec", None), ("b.edgec/model.onnx", zeros)])
        return post(port, archive.read_bytes())

    def declared():
        header = tarfile.TarInfo("b.edgec/model.onnx")
        header.size = 2**40  # declared, never sent
        return post(port, gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024))

    def many():
        members = [("b.edgec", None)] + [(f"b.edgec/f{i}", b"") for i in range(200_000)]
        return post(port, tar_gz(workdir / "many.tgz", members).read_bytes())

    def dot_tar():
        folder = signed("dot", onnx=True)
        return post(port, tar_gz(workdir / "dot.tgz", members_of(folder, "./")).read_bytes())

    def drip():
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with contextlib.suppress(OSError):
                for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.3)
            status, body = _parse(_read_all(sock))
        held = time.monotonic() - started
        return status, {"error": f"{body.get('error')} (held {held:.1f} s; deadline 1 s)"}

    def cap():
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                return _parse(_read_all(sock))
        finally:
            for s in idle:
                s.close()
            time.sleep(1.5)  # the idle ones reach their deadline and free their slots

    def length(value: str):
        def probe():
            status, body = post(port, b"x" * 10, length=value)
            leaked = "/tmp" in json.dumps(body) or str(REPO) in json.dumps(body)
            return status, {"error": f"{body.get('error')}{' (LEAKS A PATH)' if leaked else ''}"}

        return probe

    table = [  # probe, expected status, what the reply must say (or "" for a measurement)
        ("path escape (runtime.model ../../etc/hostname)", escape, 422, "unsafe path"),
        ("manifest flip (one value changed)", flip, 422, "does not match its own digest"),
        ("consistent rewrite, unsigned then signed by an untrusted key", rewrite_unsigned, 422,
         "not trusted here"),
        ("tar bomb (8 MiB of zeros)", bomb, 413, "compression bomb"),
        ("declared 1 TiB member", declared, 413, "declares"),
        ("200,000 empty members", many, 413, "more than 50"),
        ("./ archive of a signed bundle (tar czf b.tgz -C dir .)", dot_tar, 200, ""),
        ("drip client (a byte every 0.3 s)", drip, 408, "did not arrive"),
        ("third connection past a cap of 2", cap, 503, "busy"),
        ("Content-Length: abc", length("abc"), 400, "whole number"),
        ("Content-Length: -5", length("-5"), 400, "whole number"),
    ]  # fmt: skip
    rows = []
    with serving(agent) as port:
        for name, probe, status, says in table:
            started = time.perf_counter()
            try:
                code, body = probe()
            except Exception as e:  # the probe itself broke: recorded as a failure
                code, body = -1, {"error": f"probe failed: {type(e).__name__}: {e}"}
            seconds = time.perf_counter() - started
            error = str(body.get("error", ""))
            alive = healthy(port)
            ok = code == status and (says in error if says else "results" in body) and alive
            observed = f"{code} {error[:160] if error else 'measured'}"
            rows.append(
                {
                    "probe": name,
                    "expected": f"{status} {says or 'measured'}; agent still serving",
                    "observed": observed + ("" if alive else "; AGENT NOT SERVING"),
                    "seconds": round(seconds, 2),
                    "pass": ok,
                }
            )
            print(f"probe {name}: {'pass' if ok else 'FAIL'} ({observed[:100]})", flush=True)
    return rows


# -- resume -------------------------------------------------------------------------------------
def resume(workdir: Path) -> bool:
    from toolchain.pipeline import RunDir, Stage

    def writer(name):
        def fn(ctx):
            (ctx.out_dir / f"{name}.bin").write_bytes(b"weights of " + name.encode())

        return fn

    stages = [
        Stage("a", writer("a")),
        Stage("b", writer("b"), depends=("a",)),
        Stage("c", writer("c"), depends=("b",)),
    ]
    with RunDir(workdir / "run") as run:
        run.run(stages)
        path = workdir / "run" / "a" / "a.bin"
        data = bytearray(path.read_bytes())
        data[0] ^= 1  # same size, other content
        path.write_bytes(bytes(data))
        statuses = [r.status for r in run.run(stages)]
    print(f"resume after one flipped bit: {statuses}", flush=True)
    return statuses == ["ran", "ran", "ran"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1200, help="fuzzed inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgec-reliability-") as tmp:
        result = {
            "command": "python benchmarks/bench_reliability.py " + " ".join(sys.argv[1:]),
            "agent_probes": probes(Path(tmp) / "probes"),
            "resume_detects_changed_output": resume(Path(tmp)),
            "fuzz": fuzz(args.cases, args.seed),
        }
    total = sum(r["cases"] for r in result["fuzz"])
    crashes = sum(r["crashes"] for r in result["fuzz"])
    result["goals"] = {
        "zero_crashes_in_at_least_20000_cases": crashes == 0 and total >= 20_000,
        "fuzzed_cases": total,
        "crashes": crashes,
        "every_probe_passes": all(r["pass"] for r in result["agent_probes"]),
        "resume_detects_changed_output": result["resume_detects_changed_output"],
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "reliability.md").write_text(markdown(result))
    print(json.dumps(result["goals"], indent=1))
    return 0


def markdown(result: dict) -> str:
    lines = [
        "# Reliability: fuzzed inputs, agent probes, resume",
        "",
        f"Command: `{result['command']}` ({result['wall_s']:.0f} s on this host). A crash is "
        "an exception other than edgec's typed errors.",
        "",
        "| fuzz target | cases | crashes | s |",
        "|---|---|---|---|",
    ]
    for r in result["fuzz"]:
        lines.append(f"| {r['target']} | {r['cases']} | {r['crashes']} | {r['seconds']} |")
    lines += ["", "| agent probe | expected | observed | pass |", "|---|---|---|---|"]
    for r in result["agent_probes"]:
        observed = r["observed"].replace("|", "/")
        lines.append(f"| {r['probe']} | {r['expected']} | {observed} | {r['pass']} |")
    lines += [
        "",
        f"Resume detects a changed output (one flipped bit, same size): "
        f"{result['resume_detects_changed_output']}",
        "",
        "## Goals",
        "",
        "```",
        json.dumps(result["goals"], indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
