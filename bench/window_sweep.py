"""Launch-config sweep of the decode window kernel (compile_passes/kernels/gqa_decode.py) at real decode shapes.

  python bench/window_sweep.py --out DIR        # GPU; one line per config, written as it is measured

Shape: Qwen3-VL-2B's decode attention, one query of 16 heads over 8 kv heads of 128 (bf16), in a 32768-slot static
cache, at each context length. Each config runs as 28 calls (one per layer) in a CUDA graph, timed by replay, so
launch cost is what the decode step pays; the result is checked against the default config's. Bound: bytes (the
visible K and V once), reported as GB/s.
"""
import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compile_passes.kernels.gqa_decode import gqa_window_decode_triton  # noqa: E402

# (block_n, min_span, programs_per_sm, num_warps, num_stages), the default first; ordered by what is likeliest to
# matter (a run may be cut short): fewer, longer splits (one wave of one-program-per-SM tiles), deeper pipelines
CONFIGS = [(128, 256, 1, 4, 3), (128, 256, 4, 4, 2), (128, 256, 2, 4, 3), (128, 256, 1, 4, 4), (128, 512, 1, 4, 3),
           (128, 256, 1, 8, 3), (128, 256, 4, 4, 3), (64, 256, 1, 4, 4), (64, 128, 2, 4, 3)]


def graphed_us(fn, calls=28, replays=20):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * calls)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", default="8192,30000")
    p.add_argument("--out", default=".")
    args = p.parse_args()
    out = Path(args.out) / "window_sweep.txt"
    dev, h, hkv, d, s = torch.device("cuda"), 16, 8, 128, 32768
    q = torch.randn(1, h, 1, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, hkv, s, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, hkv, s, d, device=dev, dtype=torch.bfloat16)
    start = torch.zeros(1, dtype=torch.long, device=dev)
    with out.open("w") as f:
        f.write(f"{torch.cuda.get_device_name()} torch {torch.__version__}\n")
        for ctx, cfg in itertools.product([int(c) for c in args.contexts.split(",")], CONFIGS):
            slot = torch.tensor([ctx - 1], device=dev)
            end = slot + 1
            block_n, min_span, pps, warps, stages = cfg

            def call(cfg=cfg):
                return gqa_window_decode_triton(q, k, v, start, end, slot, d ** -0.5, block_n=block_n,
                                                min_span=min_span, programs_per_sm=pps, num_warps=warps,
                                                num_stages=stages)
            t0 = time.perf_counter()
            try:
                if cfg == CONFIGS[0]:
                    want = call()
                err = (call() - want).abs().max().item()
                us = graphed_us(call)
            except Exception as e:  # a config that does not fit (shared memory) is a row, not the end
                f.write(f"ctx {ctx} {cfg} failed: {type(e).__name__}: {str(e)[:120]}\n")
                f.flush()
                continue
            gbs = 2 * ctx * hkv * d * 2 / (us * 1e-6) / 1e9
            f.write(f"ctx {ctx} block_n,min_span,pps,warps,stages={cfg}: {us:.2f} us {gbs:.0f} GB/s "
                    f"err {err:.1e} ({time.perf_counter() - t0:.1f} s)\n")
            f.flush()


if __name__ == "__main__":
    main()
