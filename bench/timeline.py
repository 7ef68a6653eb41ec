"""A call's GPU timeline (GPU): every kernel and copy of a few back-to-back calls, with the idle gaps between them,
for the compiled vision encoder (one image) and the compiled MLA 16-in-one-step decode. Shows what a call adds
around its CUDA graph (input copies, output clones, host reads) and how long the GPU waits on the host.

  python bench/timeline.py [--what vision,mla] [--size 448]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import zoo  # noqa: E402
from bench.mla import DECODE, R1  # noqa: E402
from bench.profile_gpu import wall  # noqa: E402
from bench.qwen3_vl import CONFIG_2B, image_prompt  # noqa: E402
from zoo_ref.deepseek import MLA, MLAConfig  # noqa: E402
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_  # noqa: E402


def timeline(fn, label, calls=3, show=40):
    """Run fn `calls` times under the profiler; print the last call's GPU events in order with the gaps."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--what", default="vision,mla")
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--out", default=None)
    args = p.parse_args()
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
    if "mla" in what:
        with torch.device(dev):
            mla = randomize_(MLA(MLAConfig.from_dict(json.loads(R1.read_text())))).to(torch.bfloat16).eval()
        c = zoo.compile(mla)
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
