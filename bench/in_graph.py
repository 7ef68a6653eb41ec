"""Kernel choices measured inside a CUDA graph (as the compiled paths run them: launch gaps and a library's own
memsets included), GPU only.

  python bench/in_graph.py [sdpa] [few_rows]

sdpa:     torch's SDPA backends on one vision segment (16 heads of 64; 784 / 4096 / 12,544 patches), 24 layers of
          (a GEMM, then attention) in one graph: what zoo::segment_attention picks from.
few_rows: the 16-row GEMMs of MLA's batched decode step (o_proj, q_a + kv_a, q_b): cuBLAS (x W^T, W x^T, x
          against a [K, N] copy) beside kernels/few_rows.py's configs, 10 calls per graph.
"""
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.attention import graphed_ms  # noqa: E402
from compile_passes.kernels.few_rows import few_rows_mm_triton  # noqa: E402


def graphed_us(fn, repeat):
    """Median us of one fn() when `repeat` calls run in one CUDA graph."""
    return 1e3 * graphed_ms(fn, repeat)


def sdpa():
    for n in (784, 4096, 12544):
        q, k, v = (torch.randn(1, 16, n, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        x = torch.randn(n, 1024, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
        gemm = graphed_us(lambda: torch.mm(x, w), 24)
        for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            def layer():
                torch.mm(x, w)
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
            with sdpa_kernel([backend]):
                t = graphed_us(layer, 24)
            print(f"n={n:6d} {backend.name:20s} {t:8.2f} us a layer (the GEMM alone {gemm:.2f} us)", flush=True)


def few_rows():
    for k, n in ((16384, 7168), (7168, 2112), (1536, 24576)):
        x = torch.randn(16, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        wt = w.t().contiguous()
        ref = torch.nn.functional.linear(x, w).float()
        variants = {"cuBLAS x W^T (F.linear)": lambda: torch.nn.functional.linear(x, w),
                    "cuBLAS W x^T, transposed back": lambda: torch.mm(w, x.t()).t().contiguous(),
                    "cuBLAS x W_kn (a [K, N] copy)": lambda: torch.mm(x, wt)}
        for blocks in ((32, 256, 4, 4), (32, 128, 4, 6), (64, 128, 4, 4), (16, 512, 4, 3), (16, 256, 4, 4)):
            variants[f"few_rows {blocks}"] = lambda blocks=blocks: few_rows_mm_triton(x, w, blocks=blocks)
        for name, fn in variants.items():
            err = (fn().float() - ref).abs().max().item()
            t = graphed_us(fn, 10)
            print(f"M=16 K={k:5d} N={n:5d} {name:32s} {t:6.2f} us, {2 * n * k / (t * 1e-6) / 1e12:5.2f} TB/s of "
                  f"weight, max diff {err:.3g}", flush=True)


if __name__ == "__main__":
    for part in sys.argv[1:] or ["sdpa", "few_rows"]:
        globals()[part]()
