"""One-row linears (batch-1 decode): y = x W^T (+ b) with x [1, K], W [N, K] row-major, as a Triton GEMV, with the
layer's neighbours folded in: the RMSNorm before it, the SwiGLU product before it, the residual add after it.

cuBLAS runs Qwen3-VL-2B's decode products ([1, 2048] x [2048, 4096], [2048, 2048], [2048, 12288], [6144, 2048]) as
GEMM tiles with 8 rows of M (7 empty), some with split-K and a second reduce kernel: 1.4-3.2 TB/s on an H200. A
row-block reduction streams W once: each program owns BLOCK_N outputs and walks K in BLOCK_K steps, keeping fp32
products in a [BLOCK_N, BLOCK_K] tile that is summed once at the end. Bound: bytes (W's N*K elements).
The block sizes come from a sweep on the H200 (bench/RESULTS.md): enough programs to fill the GPU several times,
long contiguous K runs per row.

Every program reads the whole input row anyway (K elements, from L2), so what the layer does to that row before the
linear costs no extra pass over memory when done here, and neither does adding the residual to the N outputs:
- gate (SwiGLU): the row is silu(gate) * x;
- norm (RMSNorm weight): the row is norm * u / rms(u); the sum of squares is gathered in the same K loop and the
  1 / rms factored out of the dot product at the end;
- residual: y += residual.
In a decode step of small kernels each one folded in saves a launch and a round trip (~1.5-2 us on an H200).
"""
import torch
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs


@triton.jit
def _gemv_kernel(x_ptr, gate_ptr, norm_ptr, w_ptr, b_ptr, r_ptr, y_ptr, N, K, w_n, eps, HAS_GATE: tl.constexpr,
                 HAS_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, EVEN: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    squares = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        if EVEN:  # N % BLOCK_N == K % BLOCK_K == 0: no masks
            x = tl.load(x_ptr + k, eviction_policy="evict_last").to(tl.float32)
            if HAS_GATE:
                a = tl.load(gate_ptr + k, eviction_policy="evict_last").to(tl.float32)
            if HAS_NORM:
                g = tl.load(norm_ptr + k, eviction_policy="evict_last").to(tl.float32)
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], eviction_policy="evict_first")
        else:
            x = tl.load(x_ptr + k, mask=k < K, other=0.0, eviction_policy="evict_last").to(tl.float32)
            if HAS_GATE:
                a = tl.load(gate_ptr + k, mask=k < K, other=0.0, eviction_policy="evict_last").to(tl.float32)
            if HAS_NORM:
                g = tl.load(norm_ptr + k, mask=k < K, other=0.0, eviction_policy="evict_last").to(tl.float32)
            w = tl.load(w_ptr + n[:, None] * w_n + k[None, :], mask=(n[:, None] < N) & (k[None, :] < K), other=0.0,
                        eviction_policy="evict_first")
        if HAS_GATE:
            x = a * tl.sigmoid(a) * x
        if HAS_NORM:
            squares += x * x
            x = x * g
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_NORM:
        y = y * tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)
    if HAS_RES:
        y += tl.load(r_ptr + n, mask=n < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + n, y.to(y_ptr.dtype.element_ty), mask=n < N)


def gemv_blocks(k: int, gate: bool = False):
    """(BLOCK_N, BLOCK_K, num_warps) for a weight of K columns: 2 x 1024 with 4 warps was the best or within 0.2 us
    of it for every decode shape of the H200 sweep (qkv, o, gate/up, down, lm_head, MLA's q_a/kv_a), the norm and
    residual variants included. With the SwiGLU prologue every program computes silu over the whole row: 4 rows per
    program and 8 warps halve that work (down, 6144 -> 2048: 10.4 -> 9.3 us, H200)."""
    block_k = min(1024, triton.next_power_of_2(k))
    return (4, block_k, 8) if gate else (2, block_k, 4)


def _row(t, k):
    """A [1, k] (or [k]) operand as a unit-stride row."""
    assert t.numel() == k, (t.shape, k)
    return t.reshape(k).contiguous()


def gemv_triton(x, w, bias=None, blocks=None, gate=None, norm=None, eps=0.0, residual=None):
    """x [1, K]; w [N, K] with unit stride along K; bias [N] or None -> [1, N] in x's dtype.
    gate [1, K]: the row is silu(gate) * x; norm [K]: then RMSNorm with that weight and eps; residual [1, N]: added."""
    n, k = w.shape
    assert x.shape == (1, k) and w.stride(1) == 1
    x = x.contiguous()
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    block_n, block_k, warps = blocks or gemv_blocks(k, gate is not None)
    unused = x  # a pointer for the operands a variant does not read
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, unused if gate is None else _row(gate, k), unused if norm is None else _row(norm, k), w,
        unused if bias is None else bias, unused if residual is None else _row(residual, n), y, n, k, w.stride(0),
        float(eps), HAS_GATE=gate is not None, HAS_NORM=norm is not None, HAS_BIAS=bias is not None,
        HAS_RES=residual is not None, EVEN=n % block_n == 0 and k % block_k == 0, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, **pdl_launch(x))
    return y
