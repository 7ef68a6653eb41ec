"""zoo's custom ops (torch.library): opaque to Inductor, plain torch on CPU, Triton on CUDA.

The CPU bodies call zoo_ref's own math, so each op's meaning is the oracle's by construction; the Triton
kernels in compile_passes/kernels are tested against these bodies (tests/compile_passes/test_kernels.py,
TRITON_INTERPRET=1).
"""
import functools
import inspect
from typing import Optional

import torch
from torch import Tensor

from zoo_ref.deepseek.mla import token_slots, write_cache
from zoo_ref.layers import activation, apply_rotary, rms_norm, rotate

silu = activation("silu")


@torch.library.custom_op("zoo::rope_", mutates_args=("q", "k"))
def rope_(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> None:
    """Rotate q [..., Hq, D] and k [..., Hk, D] in place by cos/sin [..., 1, D] (rotate_half layout)."""
    rq, rk = apply_rotary(q, k, cos, sin)
    q.copy_(rq)
    k.copy_(rk)


@rope_.register_kernel("cuda")
def _rope_cuda(q, k, cos, sin):
    from .kernels.rope import rope_triton
    rope_triton(q, k, cos, sin)


@torch.library.custom_op("zoo::rope_pair", mutates_args=())
def rope_pair(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """zoo::rope_ out of place: (rotated q, rotated k) as new contiguous tensors, for q and k that are views into a
    projection other views still read (the vision's qkv, Qwen2's packed q/k/v), which in place would be copied first."""
    rq, rk = apply_rotary(q, k, cos, sin)
    return rq.contiguous(), rk.contiguous()


@rope_pair.register_fake
def _(q, k, cos, sin):
    return q.new_empty(q.shape), k.new_empty(k.shape)


@rope_pair.register_kernel("cuda")
def _rope_pair_cuda(q, k, cos, sin):
    from .kernels.rope import rope_pair_triton
    return rope_pair_triton(q, k, cos, sin)


@torch.library.custom_op("zoo::norm_rope_pair", mutates_args=())
def norm_rope_pair(q: Tensor, k: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float, cos: Tensor,
                   sin: Tensor) -> tuple[Tensor, Tensor]:
    """zoo::rope_pair of q and k RMSNorm'ed per head first (Qwen3's q_norm / k_norm), as new contiguous tensors."""
    rq, rk = apply_rotary(rms_norm(q, q_weight, eps), rms_norm(k, k_weight, eps), cos, sin)
    return rq.contiguous(), rk.contiguous()


@norm_rope_pair.register_fake
def _(q, k, q_weight, k_weight, eps, cos, sin):
    return q.new_empty(q.shape), k.new_empty(k.shape)


@norm_rope_pair.register_kernel("cuda")
def _norm_rope_pair_cuda(q, k, q_weight, k_weight, eps, cos, sin):
    from .kernels.rope import rope_pair_triton
    return rope_pair_triton(q, k, cos, sin, q_weight, k_weight, eps)


@torch.library.custom_op("zoo::norm_rope_cache_", mutates_args=("k_cache", "v_cache"))
def norm_rope_cache_(q: Tensor, k: Tensor, v: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float, cos: Tensor,
                     sin: Tensor, k_cache: Tensor, v_cache: Tensor, slot: Tensor) -> Tensor:
    """zoo::norm_rope_pair whose rotated k, and v as it is, go straight into the caches [B, Hkv, S, D] at `slot` [T]
    (zoo_ref's KVCache.update); returns the rotated q."""
    rq, rk = norm_rope_pair(q, k, q_weight, k_weight, eps, cos, sin)
    k_cache.index_copy_(2, slot, rk.transpose(1, 2))
    v_cache.index_copy_(2, slot, v.transpose(1, 2))
    return rq


@norm_rope_cache_.register_fake
def _(q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot):
    return q.new_empty(q.shape)


@norm_rope_cache_.register_kernel("cuda")
def _norm_rope_cache_cuda(q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot):
    from .kernels.rope import rope_cache_triton
    return rope_cache_triton(q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot)


@torch.library.custom_op("zoo::norm_rotary", mutates_args=())
def norm_rotary(x: Tensor, w: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE of x RMSNorm'ed per head: the RoPE pass's match, before it pairs q with k into zoo::norm_rope_pair."""
    return rotate(rms_norm(x, w, eps), cos, sin).contiguous()


@norm_rotary.register_fake
def _(x, w, eps, cos, sin):
    return x.new_empty(x.shape)


@norm_rotary.register_kernel("cuda")
def _norm_rotary_cuda(x, w, eps, cos, sin):
    from .kernels.rope import rope_triton
    out = x.new_empty(x.shape)
    rope_triton(x, None, cos, sin, out, None, w, None, eps)
    return out


@torch.library.custom_op("zoo::rotary", mutates_args=())
def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Out-of-place RoPE of one tensor: the RoPE pass's match, before it pairs q with k into zoo::rope_."""
    return rotate(x, cos, sin)


@rotary.register_fake
def _(x, cos, sin):
    return torch.empty_like(x)


@rotary.register_kernel("cuda")
def _rotary_cuda(x, cos, sin):
    from .kernels.rope import rope_triton
    out = x.clone()
    rope_triton(out, None, cos, sin)
    return out


@torch.library.custom_op("zoo::gemv", mutates_args=())
def gemv(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x [1, K] @ w[N, K]^T (+ bias [N]) -> [1, N]: a linear of one row (batch-1 decode); plain F.linear off CUDA."""
    return torch.nn.functional.linear(x, w, bias)


@gemv.register_fake
def _(x, w, bias):
    return x.new_empty(1, w.shape[0])


@gemv.register_kernel("cuda")
def _gemv_cuda(x, w, bias):
    from .kernels.gemv import gemv_triton
    return gemv_triton(x, w, bias)


@torch.library.custom_op("zoo::few_rows_mm", mutates_args=())
def few_rows_mm(x: Tensor, w: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x [M, K] @ w[N, K]^T (+ bias [N]) -> [M, N]: a linear with a long reduction (K >= 16384) whose rows may be
    few (a batched decode step); on CUDA the Triton kernel of kernels/few_rows.py when M <= 16, else F.linear."""
    return torch.nn.functional.linear(x, w, bias)


@few_rows_mm.register_fake
def _(x, w, bias):
    return x.new_empty(x.shape[0], w.shape[0])


@few_rows_mm.register_kernel("cuda")
def _few_rows_mm_cuda(x, w, bias):
    from .kernels.few_rows import MAX_ROWS, few_rows_mm_triton
    if not 0 < x.shape[0] <= MAX_ROWS or x.dtype != w.dtype:
        return torch.nn.functional.linear(x, w, bias)
    return few_rows_mm_triton(x if x.stride(1) == 1 else x.contiguous(), w, bias)


@torch.library.custom_op("zoo::gemv_fused", mutates_args=())
def gemv_fused(x: Tensor, w: Tensor, bias: Optional[Tensor], gate: Optional[Tensor], norm: Optional[Tensor],
               eps: float, residual: Optional[Tensor]) -> Tensor:
    """zoo::gemv with its neighbours in the decoder layer folded in (x, gate [1, K]; norm [K]; residual [1, N]):
    residual + linear(RMSNorm_norm(silu(gate) * x)) where each part is there only if its operand is given."""
    u = x if gate is None else silu(gate) * x
    if norm is not None:
        u = rms_norm(u, norm, eps)
    y = torch.nn.functional.linear(u, w, bias)
    return y if residual is None else residual + y


@gemv_fused.register_fake
def _(x, w, bias, gate, norm, eps, residual):
    return x.new_empty(1, w.shape[0])


@gemv_fused.register_kernel("cuda")
def _gemv_fused_cuda(x, w, bias, gate, norm, eps, residual):
    from .kernels.gemv import gemv_triton
    return gemv_triton(x, w, bias, gate=gate, norm=norm, eps=eps, residual=residual)


@torch.library.custom_op("zoo::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """gelu(x @ w^T + bias, approximate="tanh") for x [M, K], w [N, K]: plain torch off CUDA."""
    return torch.nn.functional.gelu(torch.nn.functional.linear(x, w, bias), approximate="tanh")


@linear_gelu_tanh.register_fake
def _(x, w, bias):
    return x.new_empty(x.shape[0], w.shape[0])


@linear_gelu_tanh.register_kernel("cuda")
def _linear_gelu_tanh_cuda(x, w, bias):
    # cuBLASLt's GELU epilogue (the tanh form, on the fp32 accumulator). Not used off CUDA: the CPU
    # _addmm_activation applies the exact erf GELU instead.
    return torch._addmm_activation(bias, x, w.t(), use_gelu=True)


def _visible(x, mask):
    """x [B, Hkv, S, D] with the slots no query can see zeroed: a NaN left in a stale cache slot must not reach the
    output through 0 * NaN (zoo_ref reads only up to each row's length). A copy, on the paths that read every
    slot anyway (SDPA, the CPU bodies); the Triton kernels skip masked keys instead."""
    return x.masked_fill(~mask.any(-2)[..., None], 0)  # mask [B, 1, T, S] -> [B, 1, S, 1]


def sdpa_with_mask(q, k, v, mask, scale):
    k, v = _visible(k, mask), _visible(v, mask)
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:  # the masked memory-efficient kernel has no GQA: repeat kv heads
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return torch.where(mask.any(-1, keepdim=True), out, 0)  # no visible key: zeros, as zoo_ref


def bthd(out):
    """[B, H, T, D] with [B, T, H, D] memory: what the output projection reads without a copy. Every zoo attention
    op returns this layout (their fake tensors say so)."""
    return out.transpose(1, 2).contiguous().transpose(1, 2)


@torch.library.custom_op("zoo::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    """Masked GQA softmax attention: q [B, H, T, D], k/v [B, Hkv, S, D(v)], mask bool [B, 1, T, S] ->
    [B, H, T, Dv] with [B, T, H, Dv] memory (zoo_ref.layers.attention) through SDPA's fused kernels. Text decoders
    never run it: their masks come from a token window, and windows.attend_by_window swaps it out."""
    return bthd(sdpa_with_mask(q, k, v, mask, scale))


@attention.register_fake
def _(q, k, v, mask, scale):
    return q.new_empty(q.shape[0], q.shape[2], q.shape[1], v.shape[-1]).transpose(1, 2)


@torch.library.custom_op("zoo::mla_cache_write_", mutates_args=("kv_cache", "pe_cache"))
def mla_cache_write_(kv_cache: Tensor, pe_cache: Tensor, latent: Tensor, k_pe: Tensor, start_pos: Tensor,
                     seq_lens: Tensor, rows: Optional[Tensor] = None) -> None:
    """kv_cache[b, start_pos[b] + t] = latent[b, t] for t < seq_lens[b] (pe likewise); nothing else changes. With
    rows, batch row b writes cache row rows[b] (packed prompt tokens: each token its own batch row)."""
    if rows is None:
        write_cache(kv_cache, pe_cache, latent, k_pe, *token_slots(start_pos, seq_lens, latent.shape[1]))
        return
    positions, valid = token_slots(start_pos, seq_lens, latent.shape[1])
    cache_rows = rows[:, None].expand_as(positions)
    kv_cache[cache_rows[valid], positions[valid]] = latent[valid]
    pe_cache[cache_rows[valid], positions[valid]] = k_pe[valid]


@mla_cache_write_.register_kernel("cuda")
def _mla_cache_write_cuda(kv_cache, pe_cache, latent, k_pe, start_pos, seq_lens, rows=None):
    from .kernels.cache_write import cache_write_triton
    cache_write_triton(kv_cache, pe_cache, latent, k_pe, start_pos, seq_lens, rows)


def empty_bthd(q, dv):
    b, h, t, _ = q.shape
    return q.new_empty(b, t, h, dv).transpose(1, 2)


def flash_fits(q, k, v) -> bool:
    """What torch's FlashAttention varlen takes: fp16/bf16, one head dim <= 256 for q/k/v, GQA groups."""
    d = q.shape[-1]
    return q.dtype in (torch.float16, torch.bfloat16) and d == v.shape[-1] <= 256 and q.shape[1] % k.shape[1] == 0


def masked_attention(q, k, v, mask, scale):
    return bthd(sdpa_with_mask(q, k, v, mask, scale))


@functools.cache
def _varlen_spelling():
    """(causal kwargs, takes enable_gqa, takes scale, takes window_size) of this torch's varlen_attn (2.11 - 2.13
    differ)."""
    from torch.nn.attention.varlen import varlen_attn
    params = inspect.signature(varlen_attn).parameters
    takes_window = "window_size" in params
    causal = {"window_size": (-1, 0)} if takes_window else {"is_causal": True}
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params, takes_window


def flash_varlen(q, k, v, cu_seqlens, max_len, scale, causal: bool, window: int = 0):
    """torch's FlashAttention varlen, causal or not, GQA in the kernel (torch 2.11 has no enable_gqa flag and needs
    none). window > 0 (causal, where varlen takes window_size): each query sees its last `window` keys."""
    varlen_attn, kwargs, takes_gqa, takes_scale, _ = _varlen_spelling()
    kwargs = dict(kwargs) if causal else {key: (-1, -1) if key == "window_size" else False for key in kwargs}
    if window:
        kwargs["window_size"] = (window - 1, 0)
    if takes_gqa:
        kwargs["enable_gqa"] = q.shape[1] != k.shape[1]
    if takes_scale:
        kwargs["scale"] = scale
    elif abs(scale - q.shape[-1] ** -0.5) > 1e-12:
        q = q * (scale * q.shape[-1] ** 0.5)
    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def varlen_takes_window() -> bool:
    """Whether this torch's varlen_attn takes a sliding window (window_size; not in torch 2.11)."""
    return _varlen_spelling()[4]
