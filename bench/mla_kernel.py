"""Absorbed-MLA latent attention alone at DeepSeek-R1 shapes (128 heads, latent 512 + rope 64), bf16, beside
torch's own math, with its floor.

  python bench/mla_kernel.py [--sweep]     # H100; --sweep also times each kernel config per shape

Rows: (batch B, new tokens T, history, static cache slots S). zoo = `zoo::mla_window_attention` over each row's
visible slots, replayed from a CUDA graph as the compiled MLA runs it (on Hopper in bf16: the Gluon kernel; the
Triton kernel, mla_latent.py, is timed beside it as 'triton kernel us'). Peer: zoo_ref's
latent_attention (einsum + fp32 softmax) over exactly the visible history (sliced by a host length, mask included,
also graph-replayed). 'zoo chained us': per call, 8 calls over 8 caches in one graph (a decode step's layers: one
graph launch for all). Floor: max(visible kv bytes / copy rate, score + value FLOPs / bf16 matmul rate), both rates
measured in the same run (bench/attention.py's rates()).
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compile_passes.latent  # noqa: E402,F401  (registers torch.ops.zoo.*)
from bench.attention import graphed_ms, rates  # noqa: E402
from compile_passes.kernels.mla_latent import mla_latent_triton  # noqa: E402
from zoo_ref.deepseek.mla import attention_mask, latent_attention, token_slots  # noqa: E402
from zoo_ref.layers import relative_error  # noqa: E402

H, C, R = 128, 512, 64
SCALE = 0.1352  # R1's softmax scale with its yarn mscale (the value does not change the cost)
ROWS = [(128, 1, 4096, 4160), (64, 1, 4096, 4160), (16, 1, 4096, 4160), (1, 1, 32768, 32832),
        (1, 1, 128, 32768), (16, 1, 400, 1024), (1, 256, 512, 1024), (4, 256, 256, 1024)]

# (heads per program, keys per tile, warps, pipeline stages); the first is the default. Tried on the H100 and
# dropped: 128 heads per program (16 warps: ptxas fails; 8 warps: 478 spilled registers, 6x slower), tl.range's
# warp_specialize (no change), 128-key tiles (out of shared memory with 2 stages, spills with 1).
SWEEP = [(64, 64, 8, 2), (64, 32, 8, 3), (64, 64, 4, 2), (32, 64, 8, 2), (16, 32, 4, 2), (16, 64, 4, 2)]


def inputs(b, t, history, s, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(b * 7 + t)
    q_lat = torch.randn(b, t, H, C, device="cuda", generator=g, dtype=dtype)
    q_pe = torch.randn(b, t, H, R, device="cuda", generator=g, dtype=dtype)
    kv = torch.randn(b, s, C, device="cuda", generator=g, dtype=dtype)
    pe = torch.randn(b, s, R, device="cuda", generator=g, dtype=dtype)
    start = torch.full((b,), history, device="cuda")
    lens = torch.full((b,), t, device="cuda")
    return q_lat, q_pe, kv, pe, start, lens


def work(b, t, history):
    """(bytes, FLOPs) of the visible work: every visible kv/pe slot once, q and out once; scores + values."""
    keys = b * (t * history + t * (t + 1) // 2)  # sum over queries of visible slots
    nbytes = 2 * (b * (history + t) * (C + R) + b * t * H * (2 * C + R))
    return nbytes, 2 * H * keys * (C + R + C)


def chained_us(b, t, history, s, n=8):
    """Per call when n calls over n different caches replay back to back from one graph, as the layers of a decode
    step run: the graph's launch is shared, each call's reads still come from memory (n caches, not L2)."""
    calls = [inputs(b, t, history, s) for _ in range(n)]

    def step():
        for q_lat, q_pe, kv, pe, start, lens in calls:
            torch.ops.zoo.mla_window_attention(q_lat, q_pe, kv, pe, start, lens, SCALE)
    return 1e3 * graphed_ms(step) / n


def row(b, t, history, s, flops, bandwidth, sweep):
    q_lat, q_pe, kv, pe, start, lens = inputs(b, t, history, s)
    n = history + t
    mask = attention_mask(*token_slots(start, lens, t), n)
    want = latent_attention(q_lat.float(), q_pe.float(), kv[:, :n].float(), pe[:, :n].float(), mask, SCALE)
    got = torch.ops.zoo.mla_window_attention(q_lat, q_pe, kv, pe, start, lens, SCALE)
    nbytes, nflops = work(b, t, history)
    floor_us = 1e6 * max(nbytes / bandwidth, nflops / flops)
    out = {"B": b, "T": t, "history": history, "S": s, "rel err vs fp32": relative_error(got.float(), want),
           "floor us": floor_us, "bound": "bytes" if nbytes / bandwidth > nflops / flops else "FLOPs",
           "zoo us": 1e3 * graphed_ms(lambda: torch.ops.zoo.mla_window_attention(q_lat, q_pe, kv, pe, start, lens,
                                                                                  SCALE)),
           "triton kernel us": 1e3 * graphed_ms(lambda: mla_latent_triton(q_lat, q_pe, kv, pe, start, lens, SCALE)),
           "torch math us": 1e3 * graphed_ms(lambda: latent_attention(q_lat, q_pe, kv[:, :n], pe[:, :n], mask,
                                                                      SCALE))}
    out["zoo chained us"] = chained_us(b, t, history, s)
    out["zoo % of floor"] = 100 * floor_us / out["zoo us"]
    out["zoo TFLOP/s"] = nflops / out["zoo us"] / 1e6
    out["zoo GB/s"] = nbytes / out["zoo us"] / 1e3
    if sweep:
        out["sweep"] = {}
        for block_h, block_n, warps, stages in SWEEP:
            name, stats = f"h{block_h} n{block_n} w{warps} s{stages}", {}
            try:
                us = 1e3 * graphed_ms(lambda: mla_latent_triton(
                    q_lat, q_pe, kv, pe, start, lens, SCALE, block_h=block_h, block_n=block_n, num_warps=warps,
                    num_stages=stages, stats=stats))
                out["sweep"][name] = {"us": us, **stats}
            except Exception as e:  # out of shared memory / registers: say so
                out["sweep"][name] = f"{type(e).__name__}: {str(e)[:80]}"
    print(json.dumps(out), flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--sweep", action="store_true")
    args = p.parse_args()
    flops, bandwidth = rates()
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "bf16 matmul TFLOP/s": flops / 1e12, "copy GB/s": bandwidth / 1e9}
    print(info, flush=True)
    info["rows"] = [row(*r, flops, bandwidth, args.sweep) for r in ROWS]
    Path(args.out, "mla_kernel.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
