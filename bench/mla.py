"""MLA benchmark: the seed's prefill and decode scenarios (R1 shapes, bf16), peers side by side.

  python bench/mla.py                      # full run (GPU): R1 shapes, 100 rounds
  python bench/mla.py --device cpu --tiny  # seconds, CI smoke

Methods: zoo_ref naive, zoo_ref absorb, transformers' DeepseekV3Attention (eager attention, its DynamicCache).
Metrics (see ../shared/notes/mla.md). start_pos / seq_lens are CPU tensors (host-known lengths, as a serving
engine has them) for every method; each moves them to the GPU as it needs. The last row repeats the decode
task with them on the GPU, where checking them costs a device read per call.
  task   - the harness: each request its own batch-1 call, in order, synchronized after each.
           prefill: mean completion time from the round's start = (4 t1 + 3 t2 + 2 t3 + t4) / 4;
           decode: 100 chained steps per request (output fed back), elapsed / 1600 tokens.
  batched - all requests in one call (prefill: call time) / one step for all 16 (decode: step time / 16).
"""
import argparse
import functools
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.mla_peer import HFMLA  # noqa: E402
from bench.report import save_report  # noqa: E402
from zoo_ref.deepseek import MLA, MLAConfig  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_  # noqa: E402

R1 = Path(__file__).resolve().parents[1] / "zoo_ref/deepseek/configs/deepseek-r1.json"
TINY = {"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "q_lora_rank": 32,
        "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 64, "mscale": 1.0,
                         "mscale_all_dim": 1.0}}
PREFILL = {"new": [64, 128, 256, 256], "history": [512, 0, 0, 256]}
DECODE = {"history": [50] * 4 + [100] * 4 + [200] * 4 + [400] * 4, "steps": 100}
H100 = {"bandwidth": 3.0e12, "flops": 790e12}  # measured copy bandwidth and bf16 matmul rate (anchors.md)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Ours:
    """zoo_ref's MLA, or (compiled=True) zoo.compile of it: same cache, same call."""

    def __init__(self, mla, mode, compiled=None):
        self.mla, self.mode = compiled or mla, mode
        self.name = f"{'zoo' if compiled else 'zoo_ref'} {mode}"

    def new_cache(self, batch, histories, max_len):  # random history latents, left-aligned per row
        cache = self.mla.new_cache(batch, max_len, dtype=None, device=None)
        cache.kv.normal_()
        cache.pe.normal_()
        return cache, torch.tensor(histories, device=cache.kv.device)

    def __call__(self, x, state, start, lens):
        cache, _ = state
        return self.mla(x, cache, start, lens, mode=self.mode)


def prefill_task(method, dim, dtype, device, rounds, warmup, lengths_on="cpu"):
    """Batch-1 calls in order, synchronized after each; mean completion time from the round's start."""
    states = [method.new_cache(1, [h], h + n) for h, n in zip(PREFILL["history"], PREFILL["new"])]
    xs = [torch.rand(1, n, dim, dtype=dtype, device=device) for n in PREFILL["new"]]
    starts = [torch.tensor([h], device=lengths_on) for h in PREFILL["history"]]
    lens = [torch.tensor([n], device=lengths_on) for n in PREFILL["new"]]
    totals = []
    for r in range(warmup + rounds):
        sync(device)
        t0, done = time.perf_counter(), []
        for x, st, s, n in zip(xs, states, starts, lens):
            method(x, st, s, n)
            sync(device)
            done.append(time.perf_counter() - t0)
        if hasattr(method, "crop"):
            for st, h in zip(states, PREFILL["history"]):
                method.crop(st, h)
        if r >= warmup:
            totals.append(sum(done) / len(done))
    return sorted(totals)[len(totals) // 2]


def prefill_batched(method, dim, dtype, device, rounds, warmup, lengths_on="cpu"):
    hist, new = PREFILL["history"], PREFILL["new"]
    state = method.new_cache(len(new), hist, max(h + n for h, n in zip(hist, new)))
    x = torch.rand(len(new), max(new), dim, dtype=dtype, device=device)
    start, lens = torch.tensor(hist, device=lengths_on), torch.tensor(new, device=lengths_on)
    times = []
    for r in range(warmup + rounds):
        sync(device)
        t0 = time.perf_counter()
        method(x, state, start, lens)
        sync(device)
        times.append(time.perf_counter() - t0)
        if hasattr(method, "crop"):
            method.crop(state, hist)
    return sorted(times[warmup:])[len(times[warmup:]) // 2]


def decode_task(method, dim, dtype, device, steps, warmup, lengths_on="cpu"):
    """For each request in turn, `steps` chained single-token calls; elapsed / tokens. Every request's cache
    first gets `warmup` untimed steps at the same slots (then cropped back), as prefill gets warm-up rounds:
    one-time per-cache costs (a CUDA graph capture, a cache's first growth) stay out of the steady state."""
    hists = DECODE["history"]
    one = torch.tensor([1], device=lengths_on)
    states = [method.new_cache(1, [h], h + steps) for h in hists]
    starts = [[torch.tensor([h + i], device=lengths_on) for i in range(steps)] for h in hists]
    for st, ss, h in zip(states, starts, hists):
        x = torch.rand(1, 1, dim, dtype=dtype, device=device)
        for s in ss[:warmup]:
            x = method(x, st, s, one)
        if hasattr(method, "crop"):
            method.crop(st, [h])
    sync(device)
    t0 = time.perf_counter()
    for st, ss in zip(states, starts):
        x = torch.rand(1, 1, dim, dtype=dtype, device=device)
        for s in ss:
            x = method(x, st, s, one)
    sync(device)
    return (time.perf_counter() - t0) / (len(hists) * steps)


def decode_batched(method, dim, dtype, device, steps, warmup, lengths_on="cpu"):
    hists = DECODE["history"]
    b = len(hists)
    state = method.new_cache(b, hists, max(hists) + steps + warmup)
    ones = torch.ones(b, dtype=torch.long, device=lengths_on)
    starts = [torch.tensor(hists, device=lengths_on) + i for i in range(warmup + steps)]
    x = torch.rand(b, 1, dim, dtype=dtype, device=device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x = method(x, state, starts[i], ones)
    sync(device)
    return (time.perf_counter() - t0) / (b * steps)


def floors(c: MLAConfig):
    """Lower bounds on an H100 (s): weight bytes over bandwidth, FLOPs over the matmul rate."""
    h, n, r, v, cr, d = (c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim,
                         c.kv_lora_rank, c.hidden_size)
    q = d * c.q_lora_rank + c.q_lora_rank * h * (n + r) if c.q_lora_rank else d * h * (n + r)
    proj = q + d * (cr + r) + h * v * d  # per new token
    weight_bytes = 2 * (proj + cr * h * (n + v))

    def prefill_flops(hist, new):  # naive form: expand every cached latent, causal scores
        pairs = new * hist + new * (new + 1) // 2
        return 2 * new * proj + 2 * (hist + new) * cr * h * (n + v) + 2 * pairs * h * (n + r + v)

    per_req = [max(weight_bytes / H100["bandwidth"], prefill_flops(hh, nn) / H100["flops"])
               for hh, nn in zip(PREFILL["history"], PREFILL["new"])]
    done = [sum(per_req[:i + 1]) for i in range(len(per_req))]
    batched_flops = sum(prefill_flops(hh, nn) for hh, nn in zip(PREFILL["history"], PREFILL["new"]))
    b = len(DECODE["history"])
    dec_flops = b * (2 * proj + 4 * h * n * cr) + 2 * sum(DECODE["history"]) * h * (cr + r + cr)  # absorbed
    return {
        "prefill task": sum(done) / len(done),
        "prefill batched": max(weight_bytes / H100["bandwidth"], batched_flops / H100["flops"]),
        "decode task": weight_bytes / H100["bandwidth"],
        "decode batched": max(weight_bytes / H100["bandwidth"], dec_flops / H100["flops"]) / b,
        "decode task, lengths on GPU": weight_bytes / H100["bandwidth"],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy shapes and few rounds (CI smoke)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default="bench/out", help="where mla.json / mla.md / mla.png go")
    p.add_argument("--reference-only", action="store_true", help="skip zoo.compile (the issue-3 baseline)")
    p.add_argument("--scenarios", default="", help="comma list of scenarios to run (default: all)")
    p.add_argument("--methods", default="", help="comma list of methods to run, e.g. 'zoo absorb,hf' (default: all)")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg_dict = TINY if args.tiny else json.loads(R1.read_text())
    rounds, warmup, steps = (3, 1, 4) if args.tiny else (100, 10, DECODE["steps"])
    DECODE["steps"] = steps
    config = MLAConfig.from_dict(cfg_dict)
    torch.manual_seed(0)
    with torch.device(device):
        mla = randomize_(MLA(config)).to(dtype).eval()
    peer = HFMLA(cfg_dict, mla.state_dict(), dtype, device)
    methods = [Ours(mla, "naive"), Ours(mla, "absorb")]
    if not args.reference_only:
        import zoo
        compiled = zoo.compile(mla)
        methods += [Ours(mla, "naive", compiled), Ours(mla, "absorb", compiled)]
    methods.append(peer)
    scenarios = {"prefill task": (prefill_task, rounds), "prefill batched": (prefill_batched, rounds),
                 "decode task": (decode_task, steps), "decode batched": (decode_batched, steps),
                 "decode task, lengths on GPU": (functools.partial(decode_task, lengths_on=device), steps)}
    if args.scenarios:
        scenarios = {k: v for k, v in scenarios.items() if k in args.scenarios.split(",")}
    if args.methods:
        methods = [m for m in methods if m.name in args.methods.split(",")]
    results = {}
    with torch.inference_mode():
        for (scenario, (fn, n)), m in tqdm([(s, m) for s in scenarios.items() for m in methods], desc="mla bench"):
            results.setdefault(scenario, {})[m.name] = fn(m, config.hidden_size, dtype, device, n, warmup)
    floor = floors(config)
    write_report(results, floor, args, device)


def write_report(results, floor, args, device):
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    import transformers
    head = (f"MLA {'tiny' if args.tiny else 'DeepSeek-R1 shapes'}, {args.dtype}, {date.today()}, device {gpu}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
    names = list(next(iter(results.values())))
    peer = names[-1]
    unit = {"prefill task": "ms", "prefill batched": "ms", "decode task": "ms/token", "decode batched": "us/token",
            "decode task, lengths on GPU": "ms/token"}
    scale = {"ms": 1e3, "ms/token": 1e3, "us/token": 1e6}
    lines = [head, "", "| scenario | unit | " + " | ".join(names) + " | H100 floor | best vs peer | best % of floor |",
             "|---|---|" + "---|" * (len(names) + 3)]
    for scenario, row in results.items():
        u = unit[scenario]
        best = min(row[n] for n in names if n != peer)
        cells = [f"{row[n] * scale[u]:.3f}" for n in names]
        lines.append(f"| {scenario} | {u} | " + " | ".join(cells) + f" | {floor[scenario] * scale[u]:.3f} | "
                     f"{row[peer] / best:.2f}x | {100 * floor[scenario] / best:.1f}% |")
    out = save_report(args.out, "mla", "\n".join(lines), {"header": head, "results": results, "floor": floor})
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.5), squeeze=False)
        for ax, (scenario, row) in zip(axes[0], results.items()):
            u = unit[scenario]
            colors = ["tab:blue", "tab:green", "tab:cyan", "tab:olive", "tab:purple"][:len(names) - 1]
            ax.bar(names + ["floor"], [row[n] * scale[u] for n in names] + [floor[scenario] * scale[u]],
                   color=colors + ["tab:red", "tab:gray"])
            ax.set_title(scenario)
            ax.set_ylabel(u)
            ax.tick_params(axis="x", rotation=30, labelsize=7)
        fig.suptitle(head, fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "mla.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no chart")


if __name__ == "__main__":
    main()
