"""Text attention kernels alone, at Qwen3-VL-2B / Qwen3-1.7B shapes (16 query heads, 8 kv heads, head dim 128),
bf16, beside torch's own kernels, with their floors.

  python bench/attention.py            # H100: prompt (prefill) and decode tables, and a correctness check

Prompt attention (one layer, causal, B=1): zoo::prompt_attention (FlashAttention varlen over the row windows)
vs SDPA is_causal with enable_gqa (what transformers' sdpa path runs for an unpadded prompt) vs the path zoo had
before (a [B, 1, T, S] mask over a static buffer of S slots, K/V repeated per query head). Floor: causal FLOPs
(2 * 2 * T^2 / 2 * H * D) at the measured bf16 matmul rate.
Decode attention (one layer, one query per row over a static cache of S slots): zoo::window_attention (split-K
Triton over each row's window), replayed from a CUDA graph as the decode step runs it, vs SDPA on the history sliced
out of the cache (enable_gqa; slicing by a host length cannot live in a CUDA graph); floor: the visible K/V bytes once
at the measured copy rate.
"""
import argparse
import inspect
import json
import os
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compile_passes.windows  # noqa: E402,F401  (registers torch.ops.zoo.*)
from compile_passes.ops import sdpa_with_mask  # noqa: E402
from zoo_ref.decoder import window_mask  # noqa: E402
from zoo_ref.layers import attention, relative_error  # noqa: E402
from zoo_ref.qwen3_vl.vision import mask_of_segments  # noqa: E402

H, HKV, D = 16, 8, 128
F = torch.nn.functional


def ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graphed_ms(fn, repeat=1):
    """Median ms of one fn() replayed from a CUDA graph (as the decode step runs it: no launch overhead); with
    repeat > 1 the graph holds that many calls back to back and the time is per call."""
    fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            fn()
    return ms(graph.replay) / repeat


def rates():
    """Measured bf16 matmul FLOP/s and device copy bytes/s (read + write)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    flops = 2 * 8192 ** 3 / (ms(lambda: a @ a) * 1e-3)
    x = torch.empty(1 << 28, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    bandwidth = 2 * x.numel() * 2 / (ms(lambda: y.copy_(x)) * 1e-3)
    return flops, bandwidth


def check():
    """bf16 kernels vs the fp32 oracle on random inputs: padding both sides, NaN in every slot no query sees."""
    g = torch.Generator(device="cuda").manual_seed(0)
    out = {}
    b, t = 3, 77
    q = torch.randn(b, t, H, D, device="cuda", generator=g).to(torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(b, HKV, t, D, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    start = torch.tensor([0, 5, 30], device="cuda")
    end = torch.tensor([77, 77, 60], device="cuda")
    mask = window_mask(start, end, torch.arange(t, device="cuda"), t)
    want = attention(q.float(), k.float(), v.float(), mask, D ** -0.5)
    got = torch.ops.zoo.prompt_attention(q, k, v, start, end, D ** -0.5, True)
    out["prompt_attention bf16 vs fp32 oracle"] = relative_error(got.float(), want)
    s = 4096
    kc, vc = (torch.full((b, HKV, s, D), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(2))
    start, slot = torch.tensor([0, 7, 300], device="cuda"), torch.tensor([1000], device="cuda")
    for c in (kc, vc):
        c[:, :, :1001] = torch.randn(b, HKV, 1001, D, device="cuda", generator=g).to(torch.bfloat16)
    kc[2, :, :300] = float("nan")  # row 2's padding slots: stale NaN the window never reads
    q1 = torch.randn(b, 1, H, D, device="cuda", generator=g).to(torch.bfloat16).transpose(1, 2)
    mask = window_mask(start, slot.expand(b) + 1, slot, 1001)
    want = attention(q1.float(), kc[:, :, :1001].float().nan_to_num(), vc[:, :, :1001].float(), mask, D ** -0.5)
    got = torch.ops.zoo.window_attention(q1, kc, vc, start, slot.expand(b) + 1, slot, D ** -0.5)
    out["window_attention bf16 vs fp32 oracle (NaN outside the windows)"] = relative_error(got.float(), want)
    assert torch.isfinite(got).all()
    cu = torch.tensor([0, 196, 196 + 64, 196 + 64 + 400], device="cuda")  # three frames of different sizes
    qkv = torch.randn(660, 3, 16, 64, device="cuda", generator=g).to(torch.bfloat16)
    qv, kv_, vv = (t.transpose(0, 1)[None] for t in qkv.unbind(1))
    want = attention(qv.float(), kv_.float(), vv.float(), mask_of_segments(cu, 660), 0.125)
    got = torch.ops.zoo.segment_attention(qv, kv_, vv, cu, 400, 0.125)
    out["segment_attention bf16 vs fp32 oracle"] = relative_error(got.float(), want)
    return out


def add_row(rows, row, percent_of_floor):
    row["zoo % of floor"] = percent_of_floor
    rows.append(row)
    print(row, flush=True)


def vision_table(flops):
    """Vision encoder attention, one layer (16 heads, d 64): one 1792x1792 image (12,544 patches) and 8 images of
    448x448 (784 each) in one call; before: a dense [1, 1, N, N] block-diagonal mask."""
    rows = []
    for lengths in ([12544], [784] * 8, [4096]):
        n = sum(lengths)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda")
        qkv = torch.randn(n, 3, 16, 64, device="cuda", dtype=torch.bfloat16)
        q, k, v = (t.transpose(0, 1)[None] for t in qkv.unbind(1))
        mask = mask_of_segments(cu, n)
        floor = sum(4 * s * s * 16 * 64 for s in lengths) / flops * 1e3
        row = {"segments": f"{len(lengths)} x {lengths[0]}", "floor ms": floor,
               "zoo segment_attention ms": ms(lambda: torch.ops.zoo.segment_attention(q, k, v, cu, max(lengths),
                                                                                      0.125)),
               "before: dense block mask ms": ms(lambda: sdpa_with_mask(q, k, v, mask, 0.125))}
        add_row(rows, row, 100 * floor / row["zoo segment_attention ms"])
    return rows


def prompt_table(flops, lengths):
    rows = []
    for t in lengths:
        q = torch.randn(1, t, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k, v = (torch.randn(1, HKV, t, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        start, end = torch.zeros(1, dtype=torch.long, device="cuda"), torch.full((1,), t, device="cuda")
        floor = 2 * 2 * t * t / 2 * H * D / flops * 1e3
        row = {"T": t, "floor ms": floor,
               "zoo unpadded ms": ms(lambda: torch.ops.zoo.prompt_attention(q, k, v, start, end, D ** -0.5, False)),
               "zoo padded path (varlen) ms": ms(lambda: torch.ops.zoo.prompt_attention(q, k, v, start, end,
                                                                                         D ** -0.5, True)),
               "sdpa is_causal gqa ms": ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                  enable_gqa=True))}
        if t <= 8192:  # the mask path zoo had: over a 32k static buffer (S = 32768), K/V repeated per head
            s = 32768
            kb, vb = (torch.randn(1, HKV, s, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            mask = window_mask(start, end, torch.arange(t, device="cuda"), s)
            row["old masked over 32k buffer ms"] = ms(lambda: sdpa_with_mask(q, kb, vb, mask, D ** -0.5))
        add_row(rows, row, 100 * floor / row["zoo unpadded ms"])
    return rows


def decode_table(bandwidth, cases):
    rows = []
    for b, history, s in cases:
        q = torch.randn(b, 1, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        kc, vc = (torch.randn(b, HKV, s, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        start = torch.zeros(b, dtype=torch.long, device="cuda")
        slot = torch.tensor([history - 1], device="cuda")
        end = slot.expand(b) + 1
        floor = 2 * b * HKV * history * D * 2 / bandwidth * 1e6
        row = {"B": b, "history": history, "buffer S": s, "floor us": floor,
               "zoo window_attention us (CUDA graph)": 1e3 * graphed_ms(
                   lambda: torch.ops.zoo.window_attention(q, kc, vc, start, end, slot, D ** -0.5)),
               "sdpa on sliced history us": 1e3 * ms(lambda: F.scaled_dot_product_attention(
                   q, kc[:, :, :history], vc[:, :, :history], enable_gqa=True))}
        add_row(rows, row, 100 * floor / row["zoo window_attention us (CUDA graph)"])
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--parts", default="vision,prompt,decode")
    args = p.parse_args()
    from torch.nn.attention.varlen import varlen_attn
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "varlen_attn signature": str(inspect.signature(varlen_attn))}
    print(info, flush=True)
    info["check"] = check()
    print(info["check"], flush=True)
    flops, bandwidth = rates()
    info.update({"bf16 matmul TFLOP/s": flops / 1e12, "copy GB/s": bandwidth / 1e9})
    print(f"measured: {flops / 1e12:.0f} TFLOP/s bf16 matmul, {bandwidth / 1e9:.0f} GB/s copy", flush=True)
    if "vision" in args.parts:
        info["vision"] = vision_table(flops)
    if "prompt" in args.parts:
        info["prompt"] = prompt_table(flops, (128, 2048, 8192, 30000))
    if "decode" in args.parts:
        info["decode"] = decode_table(bandwidth, [(1, 128, 1024), (1, 128, 32768), (1, 8192, 32768),
                                                  (1, 30000, 32768), (8, 128, 32768), (8, 8192, 32768),
                                                  (64, 4096, 8192)])
    Path(args.out, "attention.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
