"""Where the time goes (GPU): top CUDA kernels of one compiled Qwen3-VL decode step and vision encode, and
of one compiled MLA decode call; plus host overhead (call time vs kernel time).

  python bench/profile_gpu.py [--what qwen,vision,mla]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import zoo  # noqa: E402
from bench.mla import R1  # noqa: E402
from bench.qwen3_vl import CONFIG_2B, image_prompt  # noqa: E402
from zoo_ref.deepseek import MLA, MLAConfig  # noqa: E402
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_  # noqa: E402


def top_kernels(fn, n_calls, label, rows=14):
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(n_calls):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" or e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events) / n_calls
    launches = sum(e.count for e in events if e.device_type.name == "CUDA") / n_calls
    print(f"\n== {label}: GPU kernel time {total / 1e3:.3f} ms per call, {launches:.0f} kernels per call")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:rows]:
        print(f"  {e.self_device_time_total / n_calls / 1e3:8.3f} ms  x{e.count // n_calls:<4} {e.key[:90]}")


def wall(fn, n):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--what", default="qwen,vision,mla")
    p.add_argument("--rows", type=int, default=30, help="kernels listed per profile")
    p.add_argument("--sizes", default="448,1024,1792", help="vision image sizes")
    args = p.parse_args()
    what = set(args.what.split(","))
    dev = torch.device("cuda")
    if what & {"qwen", "vision"}:
        config = Qwen3VLConfig.from_dict(json.loads(CONFIG_2B.read_text()))
        with torch.device(dev):
            model = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
        compiled = zoo.compile(model, max_batch_size=8, max_seq_len=576)
        if "qwen" in what:
            ids = torch.randint(10, 1000, (1, 128), device=dev)
            compiled.generate(ids, max_new_tokens=4, eos_token_id=[])
            graph, _ = compiled.graphs.graphs[("decode", 1, False)]  # the greedy decode step's graph (batch bucket 1)
            per_token = wall(lambda: compiled.generate(ids, max_new_tokens=64, eos_token_id=[]), 2) / 64
            print(f"decode replay wall {wall(graph.replay, 50):.3f} ms/step; generate(64) {per_token:.3f} ms/token")
            top_kernels(graph.replay, 10, "qwen decode step (batch 1, CUDA graph)", rows=args.rows)
        if "vision" in what:
            for size in map(int, args.sizes.split(",")):
                _, px, gr = image_prompt(config, size, device=dev)
                # the CUDA graph of this grid, without the feature cache; no_grad as in encode_vision (with autograd
                # on, Dynamo traces a training graph, which the passes' inference patterns do not match)
                encode = torch.no_grad()(lambda: compiled._encode(px, gr))  # noqa: E731
                print(f"vision {size}: layout {wall(lambda: compiled.model.model.visual.layout(gr), 10):.3f} ms, "
                      f"encode {wall(encode, 10):.3f} ms")
                top_kernels(encode, 5, f"vision {size} encode", rows=args.rows)
    if "mla" in what:
        cfg = json.loads(R1.read_text())
        with torch.device(dev):
            mla = randomize_(MLA(MLAConfig.from_dict(cfg))).to(torch.bfloat16).eval()
        c = zoo.compile(mla)
        # decode batch 1 and 16 (bench/mla.py's tasks), prefill 256 new tokens after 256 (batch 1) and
        # bench/mla.py's batched prefill (rows of 64/128/256/256 new tokens after 512/0/0/256); lengths on the host
        # (the graphed path)
        for b, t, hist, new in ((1, 1, 300, [1]), (16, 1, 200, [1] * 16), (1, 256, 256, [256]),
                                (4, 256, [512, 0, 0, 256], [64, 128, 256, 256])):
            cache = c.new_cache(b, 1024)
            x = torch.rand(b, t, 7168, device=dev, dtype=torch.bfloat16)
            start, lens = torch.tensor(hist).expand(b).contiguous(), torch.tensor(new)
            call = lambda: c(x, cache, start, lens)  # noqa: E731
            label = f"mla absorbed B={b} T={t} history {hist}"
            print(f"{label}: call {wall(call, 30):.3f} ms")
            graph = list(c.graphs.graphs.values())[-1][0]  # each row's new cache: its graph is the newest
            print(f"{label}: replay {wall(graph.replay, 30):.3f} ms")
            top_kernels(graph.replay, 10, f"{label} (CUDA graph)", rows=args.rows)

if __name__ == "__main__":
    main()
