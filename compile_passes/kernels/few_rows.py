"""Linears of a few rows with a long reduction: y = x W^T (+ b), x [M <= 16, K], W [N, K] row-major, K >= 16384.

A batched decode step (MLA, 16 requests: o_proj is [16, 16384] x [16384, 7168], 235 MB of weight) is bound by the
weight's bytes. cuBLAS runs it as split-K tiles: a memset of the partial sums, the GEMM, a reduce kernel, 65.4 us
in a CUDA graph on an H200 (3.6 TB/s). Here each program owns BLOCK_N outputs for all M rows and streams its
weight rows once along K (a [16, BLOCK_K] x [BLOCK_K, BLOCK_N] tensor-core product per step, the x tile from L2):
58.6 us (4.0 TB/s), no second kernel. Measured only where it wins: at K = 7168 (MLA's q_a/kv_a) and 1536 (q_b)
cuBLAS ties or wins (bench/RESULTS.md), so the linears pass hands this kernel only K >= 16384.
Bound: bytes (W's N * K elements).
"""
import torch
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs

MAX_ROWS = 16  # one tensor-core tile of rows (tl.dot's smallest M); compile_passes/linears.py hands it no more


@triton.jit
def _few_rows_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, x_m, w_n, y_m, HAS_BIAS: tl.constexpr, EVEN: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     PRECISION: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, BLOCK_M)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        if EVEN:  # N % BLOCK_N == K % BLOCK_K == 0: only the rows past M are masked
            x = tl.load(x_ptr + m[:, None] * x_m + k[None, :], mask=m[:, None] < M, other=0.0)
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], eviction_policy="evict_first")
        else:
            x = tl.load(x_ptr + m[:, None] * x_m + k[None, :], mask=(m[:, None] < M) & (k[None, :] < K), other=0.0)
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], mask=(n[:, None] < N) & (k[None, :] < K), other=0.0,
                        eviction_policy="evict_first")
        acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + m[:, None] * y_m + n[None, :], acc.to(y_ptr.dtype.element_ty), mask=(m[:, None] < M) &
             (n[None, :] < N))


def few_rows_mm_triton(x, w, bias=None, blocks=(32, 256, 4, 4)):
    """x [M, K] (M <= 16), w [N, K], both unit stride along K; bias [N] or None -> [M, N] in x's dtype.
    blocks: (BLOCK_N, BLOCK_K, warps, stages), from the H200 sweep (32 x 256, 4 warps, 4 stages: 58.6 us for
    MLA's o_proj; 32 x 128 with 6 stages the same)."""
    (m, k), n = x.shape, w.shape[0]
    assert m <= MAX_ROWS and w.shape[1] == k and x.stride(1) == 1 and w.stride(1) == 1
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_n, block_k, warps, stages = blocks
    block_k = min(block_k, max(16, triton.next_power_of_2(k)))
    _few_rows_kernel[(triton.cdiv(n, block_n),)](
        x, w, x if bias is None else bias, y, m, n, k, x.stride(0), w.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, EVEN=n % block_n == 0 and k % block_k == 0, BLOCK_M=MAX_ROWS, BLOCK_N=block_n,
        BLOCK_K=block_k, PRECISION="ieee" if x.dtype == torch.float32 else "tf32", num_warps=warps,
        num_stages=stages, **pdl_launch(x))
    return y
