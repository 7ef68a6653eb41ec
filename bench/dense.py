"""Qwen3 / Qwen2.5 dense decode benchmark (random weights, real configs, bf16), peers in the same process.

  python bench/dense.py                                  # GPU: Qwen3-1.7B and Qwen2.5-1.5B, batch 1 and 8
  python bench/dense.py --models qwen3-0.6b --device cpu --tiny   # seconds-scale smoke run

Decode tok/s = B * (N - 1) / (t(N new tokens) - t(1 new token)) (prefill excluded), for zoo (zoo.compile) and
transformers with its static cache + compile (cache_implementation="static"). The floor is bandwidth: every
decode step reads the weights once (the embedding table only through its B rows unless it is the tied lm_head)
plus the KV cache, at 3.0 TB/s (the H100's measured copy rate). Also: TTFT of the prompt, the cost of the
in-graph sampler (top-k/top-p sort over the vocabulary) on its own.
"""
import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
from bench.qwen3_vl import hf_generate, sync, timed  # noqa: E402
from bench.report import save_report  # noqa: E402
from zoo_ref.qwen2 import Qwen2ForCausalLM  # noqa: E402
from zoo_ref.qwen2.model import CONFIGS as QWEN2  # noqa: E402
from zoo_ref.qwen3 import Qwen3ForCausalLM  # noqa: E402
from zoo_ref.qwen3.model import CONFIGS as QWEN3  # noqa: E402
from zoo_ref.sampling import sample_next, sampling_params  # noqa: E402

BANDWIDTH = 3.0e12  # bytes/s, H100 device copy as measured (KINDS.md)


def load(name, device, tiny):
    path = QWEN3 / f"{name}.json" if name.startswith("qwen3") else QWEN2 / f"{name}.json"
    d = json.loads(path.read_text())
    if tiny:
        d.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=1024)
    ours_cls, hf_cls, hf_cfg = ((Qwen3ForCausalLM, transformers.Qwen3ForCausalLM, transformers.Qwen3Config)
                                if d["model_type"] == "qwen3" else
                                (Qwen2ForCausalLM, transformers.Qwen2ForCausalLM, transformers.Qwen2Config))
    torch.manual_seed(0)
    with torch.device(device):
        hf = hf_cls(hf_cfg(**{k: v for k, v in d.items() if k != "model_type"})).to(torch.bfloat16).eval()
        ours = ours_cls(ours_cls.config_class.from_dict(d)).to(torch.bfloat16).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


def floor_tok_s(model, batch, context):
    c = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if not c.tie_word_embeddings:  # the embedding table is read only through the batch's rows
        weights -= model.model.embed_tokens.weight.numel() * 2
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2 * context * batch
    return batch * BANDWIDTH / (weights + kv)


def sampler_ms(vocab, batch, device):
    """The decode graph's sampler alone (repetition penalty, sort for top-k/top-p, noise, argmax) per step:
    eager kernels, as captured in the CUDA graph (without its replay's launch savings)."""
    logits = torch.randn(batch, vocab, device=device)
    seen = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
    params = sampling_params(batch, do_sample=True, top_p=0.9, top_k=50, seed=0, device=device)
    step = torch.zeros(1, dtype=torch.long, device=device)
    return timed(lambda: sample_next(logits, seen, params, step), device, 20) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="qwen3-1.7b,qwen2.5-1.5b-instruct")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--skip", default="", help="comma list: hf_static,hf_eager")
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    skip = set(filter(None, args.skip.split(",")))
    n_new = 8 if args.tiny else args.new_tokens
    batches = [int(b) for b in args.batches.split(",")]
    results, notes = {}, {}
    for name in args.models.split(","):
        hf, ours = load(name, device, args.tiny)
        t0 = time.perf_counter()
        compiled = zoo.compile(ours, max_batch_size=max(batches), max_seq_len=args.prompt + n_new + 8)
        notes[f"{name}: zoo.compile (patterns) s"] = time.perf_counter() - t0
        print(f"{name}: {sum(p.numel() for p in ours.parameters()) / 1e9:.2f}B params", flush=True)
        for batch in batches:
            ids = torch.randint(10, 1000, (batch, args.prompt), device=device)
            runs = {"zoo": lambda n: compiled.generate(ids, max_new_tokens=n, eos_token_id=[])}
            if "hf_static" not in skip:
                runs["hf_static_compile"] = lambda n: hf_generate(hf, ids, n, static=True)
            if "hf_eager" not in skip and batch == 1:
                runs["hf_eager"] = lambda n: hf_generate(hf, ids, n, static=False)
            row = {}
            for method, run in runs.items():
                with torch.no_grad():
                    start = time.perf_counter()
                    run(n_new)  # compiles, captures
                    sync(device)
                    notes[f"{name} b={batch} {method}: first generate s"] = time.perf_counter() - start
                    t1 = timed(lambda: run(1), device)
                    tn = timed(lambda: run(n_new), device)
                row[method] = batch * (n_new - 1) / max(tn - t1, 1e-9)
                row[f"{method} TTFT ms"] = t1 * 1e3
                print(f"{name} batch {batch} {method}: {row[method]:.1f} tok/s, TTFT {t1 * 1e3:.1f} ms", flush=True)
            row["floor"] = floor_tok_s(ours, batch, args.prompt + n_new // 2)
            results[f"{name} decode tok/s, batch {batch}"] = row
        notes[f"{name} explain"] = str(zoo.explain(compiled))
        hf = ours = compiled = None  # free the GPU memory before the next model
        torch.cuda.empty_cache() if device.type == "cuda" else None
    for batch in batches:
        notes[f"sampler alone (top_k 50, top_p 0.9), batch {batch}, vocab 151936: ms"] = sampler_ms(151936, batch,
                                                                                                    device)
    report(results, notes, args, device)


def report(results, notes, args, device):
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (f"dense decode ({'tiny' if args.tiny else 'real configs'}, random weights, bf16), {date.today()}, "
            f"device {gpu}, torch {torch.__version__}, transformers {transformers.__version__}")
    lines = [head, "", "| metric | zoo | HF static+compile | HF eager | floor | zoo vs HF static | zoo % of floor |",
             "|---|---|---|---|---|---|---|"]
    for metric, row in results.items():
        zoo_v, hf_v = row.get("zoo"), row.get("hf_static_compile")
        lines.append(f"| {metric} | {zoo_v:.1f} | {hf_v or float('nan'):.1f} | {row.get('hf_eager', float('nan')):.1f} "
                     f"| {row['floor']:.0f} | {zoo_v / hf_v if hf_v else float('nan'):.2f}x "
                     f"| {100 * zoo_v / row['floor']:.0f}% |")
    lines += [""] + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}:\n{v}" for k, v in notes.items()]
    save_report(args.out, "dense", "\n".join(lines), {"header": head, "results": results,
                                                     "notes": {k: v for k, v in notes.items()}})


if __name__ == "__main__":
    main()
