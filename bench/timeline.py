"""A call's GPU timeline (GPU): every kernel and copy of a few back-to-back calls, with the idle gaps between them,
for the compiled vision encoder (one image), the compiled MLA 16-in-one-step decode and the MLA batched prefill
(packed, and padded for comparison). Shows what a call adds around its CUDA graph (input copies, output clones,
host reads), how long the GPU waits on the host, and (prefill) the host's ops in order.

  python bench/timeline.py [--what vision,mla,mla_prefill] [--size 448]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import zoo  # noqa: E402
from bench.mla import DECODE, PREFILL, R1  # noqa: E402
from bench.profile_gpu import wall  # noqa: E402
from bench.qwen3_vl import CONFIG_2B, image_prompt  # noqa: E402
from zoo_ref.deepseek import MLA, MLAConfig  # noqa: E402
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_  # noqa: E402


def timeline(fn, label, calls=3, show=40, host=False):
    """Run fn `calls` times under the profiler; print the last call's GPU events in order with the gaps (host: and
    the last call's host events, from the call's start)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            torch.cuda.synchronize()
            with record_function("call"):
                fn()
            torch.cuda.synchronize()
    events = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    spans = [(e.time_range.start, e.time_range.end, e.name) for e in events]
    total = (spans[-1][1] - spans[0][0]) / calls
    busy = sum(b - a for a, b, _ in spans) / calls
    print(f"\n== {label}: {total:.1f} us per call first-to-last GPU event, {busy:.1f} us busy, "
          f"{len(spans) / calls:.0f} GPU events per call")
    gaps = [(spans[i][0] - spans[i - 1][1], spans[i - 1][2], spans[i][2]) for i in range(1, len(spans))]
    for gap, before, after in sorted(gaps, reverse=True)[:show]:
        if gap < 1.0:
            break
        print(f"  gap {gap:7.1f} us  after {before[:50]:50s} before {after[:50]}")
    tail = spans[-len(spans) // calls:]
    print("  last call, first and last 8 events:")
    for a, b, name in tail[:8] + [(0, 0, "...")] + tail[-8:]:
        print(f"    {a - tail[0][0]:8.1f} +{b - a:6.1f} us  {name[:90]}")
    if host:
        cpu = [e for e in prof.events() if e.device_type.name == "CPU"]
        start = max(e.time_range.start for e in cpu if e.name == "call")
        last = sorted((e for e in cpu if e.time_range.start >= start), key=lambda e: e.time_range.start)
        print(f"  last call's host events (us from its start; GPU's first event at {tail[0][0] - start:.1f}):")
        for e in last[:show * 2]:
            print(f"    {e.time_range.start - start:8.1f} +{e.time_range.end - e.time_range.start:6.1f}  {e.name[:80]}")


def host_time(fn, parts=(), calls=30):
    """fn's host time per call (median) with the GPU kept busy (a sleep kernel queued first, so the host never
    waits on the device), and each (owner, name) method's inclusive host time inside it (wrapped with a timer)."""
    spent = {}

    def timed(owner, name):
        inner, own = getattr(owner, name), name in vars(owner)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - t0)
        setattr(owner, name, wrapper)
        return lambda: setattr(owner, name, inner) if own else delattr(owner, name)
    totals = []
    for i in range(2):  # pass 0 timed plain, pass 1 with the wrappers
        restore = [timed(owner, name) for owner, name in parts] if i else []
        for _ in range(calls):
            torch.cuda._sleep(20_000_000)
            t0 = time.perf_counter()
            fn()
            if not i:
                totals.append(time.perf_counter() - t0)
            torch.cuda.synchronize()
        for undo in restore:
            undo()
    med = lambda xs: sorted(xs)[len(xs) // 2] * 1e6  # noqa: E731
    print(f"  host time per call {med(totals):.1f} us; inside it (timed pass): "
          + ", ".join(f"{name} {med(ts):.1f}" for name, ts in spent.items()))
    return med(totals)


def latency(fn, calls=50):
    """(host ms until fn returns, ms until the device is done), medians over calls started from an idle device: a
    synchronized benchmark's view (bench/mla.py's prefill rows)."""
    host, done = [], []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
        done.append(time.perf_counter() - t0)
    return sorted(host)[calls // 2] * 1e3, sorted(done)[calls // 2] * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--what", default="vision,mla")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--out", default=None)
    p.add_argument("--inference-mode", action="store_true", help="run everything under torch.inference_mode (as "
                   "bench/mla.py)")
    args = p.parse_args()
    if args.inference_mode:
        torch.inference_mode().__enter__()
    what, dev, rows = set(args.what.split(",")), torch.device("cuda"), {}
    if "vision" in what:
        config = Qwen3VLConfig.from_dict(json.loads(CONFIG_2B.read_text()))
        with torch.device(dev):
            model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
        compiled = zoo.compile(model, max_batch_size=1, max_seq_len=1024)
        compiled.encoder_cache = None  # as bench/qwen3_vl.py's vision rows: every call encodes
        _, px, gr = image_prompt(config, args.size, device=dev)
        gr_host = gr.cpu()
        encode = torch.no_grad()(compiled.encode_vision)
        call = lambda px=px, gr=gr: encode(px, gr)  # noqa: E731
        call()
        graph = next(g for key, (g, _) in compiled.graphs.graphs.items() if key[0] == "vision")
        rows["vision"] = {"call ms": wall(call, 20), "replay ms": wall(graph.replay, 20),
                          "call, grid on the host ms": wall(lambda: call(px, gr_host), 20)}
        print(f"vision {args.size}: {rows['vision']}")
        timeline(call, f"vision {args.size} encode_vision")
    if what & {"mla", "mla_prefill"}:
        with torch.device(dev):
            mla = randomize_(MLA(MLAConfig.from_dict(json.loads(R1.read_text())))).to(torch.bfloat16).eval()
        c = zoo.compile(mla)
    if "mla_prefill" in what:  # bench/mla.py's batched prefill: packed, then padded (the same call unpacked)
        hist, new = PREFILL["history"], PREFILL["new"]
        cache = c.new_cache(len(new), max(h + n for h, n in zip(hist, new)))
        x = torch.rand(len(new), max(new), 7168, device=dev, dtype=torch.bfloat16)
        start, lens = torch.tensor(hist), torch.tensor(new)
        call = lambda: c(x, cache, start, lens)  # noqa: E731
        for packed in (True, False):
            c.pack_prompts = packed
            call()
            graph = list(c.graphs.graphs.values())[-1][0]
            name = f"mla prefill batched, {'packed' if packed else 'padded'}"
            rows[name] = {"call ms": wall(call, 50), "replay ms": wall(graph.replay, 50)}
            print(f"{name}: {rows[name]}")
            parts = [(c.mla, "default_lengths"), (c.mla, "check_inputs"), (c.packed, "check"), (c, "_packed_prefill"),
                     (c, "_replay"), (c, "_static"), (c.graphs, "run")]
            rows[name]["host us"] = host_time(call, parts)
            rows[name]["latency: host, done ms"] = latency(call)
            rows[name]["replay latency: host, done ms"] = latency(graph.replay)
            print(f"  latency (host returns, device done): call {rows[name]['latency: host, done ms']}, "
                  f"replay {rows[name]['replay latency: host, done ms']}")
            timeline(call, name, host=True)
        c.pack_prompts = True
    if "mla" in what:
        hists = DECODE["history"]
        b = len(hists)
        cache = c.new_cache(b, max(hists) + 64)
        x = torch.rand(b, 1, 7168, device=dev, dtype=torch.bfloat16)
        start, ones = torch.tensor(hists), torch.ones(b, dtype=torch.long)
        call = lambda: c(x, cache, start, ones)  # noqa: E731
        call()
        graph = next(g for key, (g, _) in c.graphs.graphs.items() if key[1] == 1 and key[2][2][0] == b)
        rows["mla 16 in one step"] = {"call ms": wall(call, 50), "replay ms": wall(graph.replay, 50)}
        print(f"mla 16 in one step: {rows['mla 16 in one step']}")
        print("passes per graph:", zoo.explain(c).per_graph)
        timeline(call, "mla 16 in one step")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
