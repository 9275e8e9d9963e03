"""A pool of agents for one device (toolchain/profile/pool.py, poolfile.py and the pool side of
toolchain/target.py): bundles and search candidates spread over loopback agents at once, each
figure naming its agent; a dead agent set aside with a warning and its work done by another;
every agent down a clear error; a refused bundle not retried; the pool file; the CLI and the
recipe reaching the target."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from pathlib import Path

import pytest

from toolchain.config import ProfileConfig, load_recipe
from toolchain.errors import ConfigError
from toolchain.profile.agent import Agent as AgentServer
from toolchain.profile.poolfile import read_pool_file
from toolchain.profile.runners import ProfileError
from toolchain.target import DeviceTarget

TOKEN = "correct-horse-battery"
QUICK = ProfileConfig(warmup=1, iterations=3, repeats=1)
SHAPE = [(1, 8)]


@contextlib.contextmanager
def _serving(**options):
    """An agent on a free loopback port, in a thread (it measures in a fresh process); yields
    ``(url, server)``; ``server.calls`` counts the uploads that reached its measure step."""
    options = {"max_upload_mb": 1, **options}
    server = AgentServer("127.0.0.1", 0, token=TOKEN, device="x86-64-host", **options)
    server.calls = 0
    measure = server.measure

    def counted(archive, request):
        server.calls += 1
        return measure(archive, request)

    server.measure = counted
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def _closing():
    """A server that accepts each connection and closes it at once (a dying agent)."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = sock.accept()
                conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def _refusing_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def agents():
    with _serving() as one, _serving() as two:
        yield one, two


@pytest.fixture
def token(tmp_path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def _pool(urls, token: Path) -> DeviceTarget:
    return DeviceTarget.resolve("host", agent_url=list(urls), token_file=token, overrides=QUICK)


def _overlap(a: dict, b: dict) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]


def test_two_agents_measure_bundles_at_once_each_figure_naming_its_agent(
    agents, tiny_bundle, token
):
    urls = [url for url, _ in agents]
    target = _pool(urls, token)
    reports = target.measure_many([(tiny_bundle[0], SHAPE)] * 4)
    assert {r["agent"] for r in reports} == set(urls)  # both got work
    for r in reports:
        assert r["label"] == f"measured on x86-64-host by the agent at {r['agent']}"
        assert r["results"][0]["p50_ms"] > 0 and r["device"] == "x86-64-host"
    by_agent = {u: [r for r in reports if r["agent"] == u] for u in urls}
    for mine in by_agent.values():  # each agent measures one thing at a time
        assert not any(_overlap(a, b) for a in mine for b in mine if a is not b)
    one, two = by_agent.values()  # and the two agents at the same time
    assert any(_overlap(a, b) for a in one for b in two)
    assert target.agent.url == urls[0] and len(target.agents) == 2


def test_a_dead_agent_is_set_aside_and_the_live_one_does_its_work(
    agents, tiny_bundle, token, caplog
):
    live = agents[0][0]
    with _closing() as closing:
        # refused, or closed at once (seen mid-upload as a broken pipe, or as a reset)
        for dead, why in ((_refusing_url(), "connection refused"), (closing, "connection closed")):
            target = _pool([dead, live], token)
            with caplog.at_level(logging.WARNING, logger="toolchain.profile.pool"):
                reports = target.measure_many([(tiny_bundle[0], SHAPE)] * 3)
            assert [r["agent"] for r in reports] == [live] * 3
            assert target.pool.down[dead].startswith(why)
            warning = next(r.getMessage() for r in caplog.records if dead in r.getMessage())
            assert f"the agent at {dead} is down ({target.pool.down[dead]})" in warning
            # down for the rest of the build: later measurements go to the live one only
            assert target.measure(tiny_bundle[0], SHAPE)["agent"] == live
            note = target.candidate_note(3, "fp32")
            assert f"{dead} (down: " in note and "pool of 2 agents" in note


def test_every_agent_down_is_an_error_naming_each(tiny_bundle, token):
    with _closing() as closing:
        refused = _refusing_url()
        target = _pool([refused, closing], token)
        with pytest.raises(ProfileError) as info:
            target.measure_many([(tiny_bundle[0], SHAPE)] * 2)
    message = str(info.value)
    assert message.startswith("every agent of the pool failed")
    assert f"{refused}: connection refused" in message
    assert f"{closing}: connection closed" in message
    assert "edgec agent" in message  # and what to do


def test_a_bundle_the_agent_refuses_is_not_retried_on_another(agents, tiny_bundle, token, tmp_path):
    """A bundle failing verification (422) is the candidate's fault: one agent saw it, the
    error is the agent's answer, and no agent is set aside."""
    import shutil

    tampered = Path(shutil.copytree(tiny_bundle[0], tmp_path / tiny_bundle[0].name))
    (tampered / "vocab.txt").write_text("tampered\n")
    target = _pool([url for url, _ in agents], token)
    before = sum(server.calls for _, server in agents)
    with pytest.raises(ProfileError, match="refused: 422 bundle refused: .*vocab.txt"):
        target.measure(tampered, SHAPE)
    assert sum(server.calls for _, server in agents) == before + 1
    assert target.pool.down == {}


def test_an_export_failing_here_stops_the_workers_and_is_raised(agents, token):
    def jobs():
        raise ValueError("export failed")
        yield  # a generator

    with pytest.raises(ValueError, match="export failed"):
        _pool([url for url, _ in agents], token).measure_many(jobs())
    for t in threading.enumerate():
        if t.name.startswith("edgec-pool-"):
            t.join(timeout=5)
            assert not t.is_alive()


def test_search_candidates_are_exported_here_and_measured_over_the_pool(agents, token, tmp_path):
    from conftest import write_tiny_bert
    from toy import TOY_SPEC

    from toolchain.config import BudgetSpec
    from toolchain.models.loading import load_model

    model = write_tiny_bert(tmp_path / "t", classifier=True, positions=160)
    student = load_model(str(model), head="sequence-classification")
    budget = BudgetSpec(name="b", latency_ms=50.0, memory_mb=4096, batch=1, seq_len=16)
    urls = [url for url, _ in agents]
    made = []

    def make(i):
        made.append((i, threading.current_thread() is threading.main_thread()))
        return student

    figures = _pool(urls, token).measure_candidates([0, 1, 2], make, TOY_SPEC, budget, "fp32")
    assert made == [(0, True), (1, True), (2, True)]  # each made here, in order
    assert len(figures) == 3 and {f["agent"] for f in figures} <= set(urls)
    for f in figures:
        assert f["label"] == f"measured on x86-64-host by the agent at {f['agent']}"
        assert f["format"] == "fp32" and f["verdict"] == "met" and 0 < f["p50_ms"]


def test_a_latency_entry_names_its_agent_and_the_manifest_takes_it(agents, tiny_bundle, token):
    import shutil

    from toolchain.bundle.build import set_latency
    from toolchain.bundle.manifest import verify

    url = agents[1][0]
    entry = _pool([url], token).measured_latency(tiny_bundle[0], 1, 8)
    assert entry["agent"] == url
    assert entry["label"] == f"measured on x86-64-host by the agent at {url}"
    copy = Path(shutil.copytree(tiny_bundle[0], tiny_bundle[0].parent / "with-agent.edgec"))
    try:
        manifest = set_latency(copy, entry)
        assert verify(copy)["latency"]["agent"] == url == manifest["latency"]["agent"]
        assert url in (copy / "README.md").read_text()  # the card shows the label
    finally:
        shutil.rmtree(copy)


def test_the_search_hands_its_whole_top_k_over_at_once():
    from toolchain.config import BudgetSpec, SearchConfig
    from toolchain.nas.budget import _measure

    calls = []

    def measure(archs, budget):
        calls.append([str(a) for a in archs])
        return [{"p50_ms": 1.0, "agent": f"http://a{i}"} for i in range(len(archs))]

    budget = BudgetSpec(name="b", latency_ms=5.0, memory_mb=100)
    archs = ["L[0]:H32:A4:F64", "L[0,1]:H32:A4:F64", "L[1]:H32:A4:F64"]
    candidates = [{"arch": a} for a in archs]
    _measure(candidates, measure, budget, SearchConfig(measure_top_k=2), lambda n: "")
    assert len(calls) == 1 and len(calls[0]) == 2
    assert [c.get("measured", {}).get("agent") for c in candidates] == [
        "http://a0",
        "http://a1",
        None,
    ]


# -- the pool file ------------------------------------------------------------------------------
def _write_token(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_a_pool_file_resolves_its_paths_against_its_folder(tmp_path):
    folder = tmp_path / "lab"
    _write_token(folder / "tokens" / "one")
    (folder / "agents.yaml").write_text(
        "- url: http://10.0.0.1:9600\n  token_file: tokens/one\n  device: jetson\n"
        "- {url: https://10.0.0.2:9600, token_file: /abs/two, ca_cert: certs/two.crt}\n"
    )
    one, two = read_pool_file(folder / "agents.yaml")
    assert one.token_file == str(folder / "tokens" / "one") and one.ca_cert is None
    assert one.device == "jetson-orin-nano-8gb"  # an alias, resolved once
    assert two.token_file == "/abs/two" and two.ca_cert == str(folder / "certs" / "two.crt")
    assert two.device is None
    (folder / "agents.json").write_text(
        json.dumps([{"url": "http://10.0.0.1:9600", "token_file": "tokens/one"}], indent="\t")
    )
    (only,) = read_pool_file(folder / "agents.json")
    assert only.token_file == str(folder / "tokens" / "one")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.yaml", "url: http://x:1\n", "a.yaml:1: expected a list of PoolEntry fields, got a map"),
        ("a.yaml", "", "a.yaml: expected a list of PoolEntry fields, got an empty file"),
        ("a.yaml", "[]\n", "a.yaml: no agents listed"),
        ("a.yaml", "- {url: http://x:1, tokenfile: t}\n", "[0].tokenfile: unknown key 'tokenfile' "
         "(did you mean 'token_file'?)"),
        ("a.yaml", "- {url: http://x:1}\n", "a.yaml:1: [0]: missing required key 'token_file'"),
        ("a.yaml", "- {url: http://x:1, token_file: t}\n- {url: x:1, token_file: t}\n",
         "a.yaml:2: [1].url: expected a URL such as http://HOST:9600, got 'x:1'"),
        ("a.yaml", "- {url: http://x:1, token_file: t, device: jetsn}\n",
         "a.yaml: [0].device: unknown device 'jetsn'"),
        ("a.yaml", "- {url: http://x:1, token_file: t}\n- {url: http://x:1/, token_file: u}\n",
         "a.yaml: an agent listed twice: http://x:1"),
        ("a.json", '[{"url": "http://x:1",}]', "a.json:1: invalid JSON: Expecting property name"),
        ("a.json", '{"url": "http://x:1"}', "a.json: expected a list of PoolEntry fields, got a"),
    ],
)  # fmt: skip
def test_a_bad_pool_file_says_what_is_wrong_and_how_to_write_it(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        read_pool_file(tmp_path / name)
    message = str(info.value).replace(str(tmp_path / name), name)
    assert expected in message, message
    if "agent listed twice" not in expected and "unknown device" not in expected:
        assert "a pool file lists agents, e.g. - {url: http://HOST:9600" in message


def test_agents_of_another_device_are_left_out_and_the_build_says_so(tmp_path, caplog):
    token = _write_token(tmp_path / "token")
    (tmp_path / "pool.yaml").write_text(
        f"- {{url: http://127.0.0.1:9601, token_file: token, device: host}}\n"
        f"- {{url: http://127.0.0.1:9602, token_file: missing, device: jetson}}\n"
        f"- {{url: http://127.0.0.1:9603, token_file: {token}}}\n"
    )
    with caplog.at_level(logging.WARNING, logger="toolchain.profile.poolfile"):
        target = DeviceTarget.resolve("host", pool_file=tmp_path / "pool.yaml")
    assert [a.url for a in target.agents] == ["http://127.0.0.1:9601", "http://127.0.0.1:9603"]
    assert any(
        "the agent at http://127.0.0.1:9602 runs on jetson-orin-nano-8gb, not x86-64-host: not "
        "used for this build's measurements" in r.getMessage()
        for r in caplog.records
    )
    (tmp_path / "orins.yaml").write_text("- {url: http://x:1, token_file: t, device: jetson}\n")
    with pytest.raises(ConfigError, match="no agent of the pool runs on x86-64-host .its agents "
                       "run on jetson-orin-nano-8gb.: add agents of x86-64-host"):  # fmt: skip
        DeviceTarget.resolve("host", pool_file=tmp_path / "orins.yaml")
    # --target and the pool together, an agent given twice refused
    both = DeviceTarget.resolve("host", agent_url="http://127.0.0.1:9604", token_file=token,
                                pool_file=tmp_path / "pool.yaml")  # fmt: skip
    assert len(both.agents) == 3
    with pytest.raises(ConfigError, match="an agent given twice .*http://127.0.0.1:9601"):
        DeviceTarget.resolve("host", agent_url="http://127.0.0.1:9601", token_file=token,
                             pool_file=tmp_path / "pool.yaml")  # fmt: skip


# -- the CLI and the recipe ---------------------------------------------------------------------
def test_edgec_build_takes_several_targets_and_a_pool(tmp_path, token, monkeypatch):
    from toolchain.cli import build as build_cli
    from toolchain.cli.main import build_parser

    (tmp_path / "pool.yaml").write_text(f"- {{url: http://127.0.0.1:9603, token_file: {token}}}\n")
    argv = ["build", "--device", "host", "--target", "http://127.0.0.1:9601", "--target",
            "http://127.0.0.1:9602", "--token-file", str(token), "--pool",
            str(tmp_path / "pool.yaml"), "-o", str(tmp_path / "out")]  # fmt: skip
    args = build_parser().parse_args(argv)
    recipe = build_cli.recipe_from_args(args)
    assert recipe.profile.targets == ("http://127.0.0.1:9601", "http://127.0.0.1:9602")
    assert recipe.profile.pool == str(tmp_path / "pool.yaml")
    seen, original = [], DeviceTarget.resolve

    class Reached(Exception):
        pass

    def resolve(*a, **kw):  # the build's own resolution, stopped before any training
        seen.append(original(*a, **kw))
        raise Reached

    monkeypatch.setattr(DeviceTarget, "resolve", resolve)
    with pytest.raises(Reached):
        build_cli.run(args)
    assert [a.url for a in seen[0].agents] == [f"http://127.0.0.1:960{i}" for i in (1, 2, 3)]
    one = build_parser().parse_args(["build", "--target", "http://127.0.0.1:9601"])
    assert build_cli.recipe_from_args(one).profile.target == "http://127.0.0.1:9601"


def test_edgec_profile_measures_through_two_targets(agents, tiny_bundle, token, capsys):
    from toolchain.cli.main import main

    urls = [url for url, _ in agents]
    code = main(["profile", str(tiny_bundle[0]), "--device", "host", "--target", urls[0],
                 "--target", urls[1], "--token-file", str(token), "--seq", "8", "--warmup", "1",
                 "--iterations", "3", "--repeats", "1", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agent"] in urls and report["label"].startswith(
        "measured on x86-64-host by the agent at"
    )


def test_a_recipe_gives_a_list_of_agents_and_a_pool(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("profile:\n  target: [http://a:9600, https://b:9600]\n  pool: agents.yaml\n")
    profile = load_recipe(path).profile
    assert profile.targets == ("http://a:9600", "https://b:9600") and profile.pool == "agents.yaml"
    assert ProfileConfig(target="http://a:9600").targets == ("http://a:9600",)
    assert ProfileConfig().targets == ()
    for text, expected in [
        ("[http://a:1, b:2]", "r.yaml:2: profile.target: expected a URL such as http://HOST:9600, "
         "got 'b:2'"),
        ("[http://a:1, http://a:1]", "r.yaml:2: profile.target: an agent given twice: http://a:1"),
        ("[]", "r.yaml:2: profile.target: an empty list: give one agent URL or more"),
    ]:  # fmt: skip
        path.write_text(f"profile:\n  target: {text}\n")
        with pytest.raises(ConfigError) as info:
            load_recipe(path)
        assert expected in str(info.value).replace(str(path), "r.yaml")
