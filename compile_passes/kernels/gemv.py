"""One-row linears (batch-1 decode): y = x W^T (+ b) with x [1, K], W [N, K] row-major, as a Triton GEMV.

cuBLAS runs Qwen3-VL-2B's decode products ([1, 2048] x [2048, 4096], [2048, 2048], [2048, 12288], [6144, 2048]) as
GEMM tiles with 8 rows of M (7 empty), some with split-K and a second reduce kernel: 1.4-3.2 TB/s on an H200. A
row-block reduction streams W once: each program owns BLOCK_N outputs and walks K in BLOCK_K steps, keeping fp32
products in a [BLOCK_N, BLOCK_K] tile that is summed once at the end. Bound: bytes (W's N*K elements).
The block sizes come from a sweep on the H200 (bench/RESULTS.md): enough programs to fill the GPU several times,
long contiguous K runs per row.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, K, w_n, HAS_BIAS: tl.constexpr, EVEN: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        if EVEN:  # N % BLOCK_N == K % BLOCK_K == 0: no masks
            x = tl.load(x_ptr + k, eviction_policy="evict_last")
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], eviction_policy="evict_first")
        else:
            x = tl.load(x_ptr + k, mask=k < K, other=0.0, eviction_policy="evict_last")
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], mask=(n[:, None] < N) & (k[None, :] < K), other=0.0,
                        eviction_policy="evict_first")
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + n, y.to(y_ptr.dtype.element_ty), mask=n < N)


def gemv_blocks(k: int):
    """(BLOCK_N, BLOCK_K, num_warps) for a weight of K columns: 2 x 1024 with 4 warps was the best or within 0.2 us
    of it for every decode shape of the H200 sweep (qkv, o, gate/up, down, lm_head, MLA's q_a/kv_a)."""
    return 2, min(1024, triton.next_power_of_2(k)), 4


def gemv_triton(x, w, bias=None, blocks=None):
    """x [1, K]; w [N, K] with unit stride along K; bias [N] or None -> [1, N] in x's dtype."""
    n, k = w.shape
    assert x.shape == (1, k) and w.stride(1) == 1
    x = x.contiguous()
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    block_n, block_k, warps = blocks or gemv_blocks(k)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, w, y if bias is None else bias, y, n, k, w.stride(0), HAS_BIAS=bias is not None,
        EVEN=n % block_n == 0 and k % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
    return y
