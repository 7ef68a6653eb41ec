"""GQA attention for short query runs (decode) over a static KV cache: split-K flash-decoding.

A program takes the n_rep query heads that share one kv head, for one query and one split of the keys, so
each K/V tile is read once per group (no repeat_interleave copy). Key blocks the mask allows nowhere are
skipped: a short history in a long static cache costs what the history costs. Splits merge by log-sum-exp.
"""
import torch
import triton
import triton.language as tl

from .splitk import merge_splits_into, online_softmax_step, split_plan, store_split


@triton.jit
def _gqa_split_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, lse_ptr, scale, q_b, q_h, q_t, k_b, k_h, k_s,
                      v_b, v_h, v_s, T, S, H, split_len, N_REP: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    bt = tl.program_id(0)
    g = tl.program_id(1)
    sp = tl.program_id(2)
    n_splits = tl.num_programs(2)
    b = bt // T
    t = bt % T
    r = tl.arange(0, BLOCK_H)
    heads = g * N_REP + r
    hm = r < N_REP
    d = tl.arange(0, BD)
    dm = d < D
    q = tl.load(q_ptr + b * q_b + heads[:, None] * q_h + t * q_t + d[None, :], mask=hm[:, None] & dm[None, :],
                other=0.0)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BD], tl.float32)
    start = sp * split_len
    end = tl.minimum(start + split_len, S)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        allowed = tl.load(mask_ptr + bt * S + offs, mask=offs < end, other=0) != 0
        if tl.max(allowed.to(tl.int32), axis=0) > 0:
            kv_mask = allowed[:, None] & dm[None, :]
            k = tl.load(k_ptr + b * k_b + g * k_h + offs[:, None] * k_s + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_ptr + b * v_b + g * v_h + offs[:, None] * v_s + d[None, :], mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            m_i, l_i, acc = online_softmax_step(s * scale, allowed, v, m_i, l_i, acc, PRECISION)
    store_split(o_ptr, lse_ptr, (bt * H + heads) * n_splits + sp, acc, l_i, m_i, hm, BD)


def gqa_decode_triton(q, k, v, mask, scale, block_n=64, n_splits=None):
    """q [B, H, T, D], k/v [B, Hkv, S, D], mask bool [B or 1, 1, T, S] -> [B, H, T, D] (contiguous)."""
    b, h, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    n_rep = h // hkv
    assert k.stride(-1) == v.stride(-1) == q.stride(-1) == 1 and v.shape[-1] == d
    mask = mask.expand(b, 1, t, s).reshape(b * t, s).contiguous()
    bd = triton.next_power_of_2(max(d, 16))
    block_h = max(16, triton.next_power_of_2(n_rep))
    split_len, n_splits = split_plan(s, block_n, b * t * hkv, q.device, n_splits)
    o = torch.empty(b * t, h, n_splits, bd, dtype=torch.float32, device=q.device)
    lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q.device)
    _gqa_split_kernel[(b * t, hkv, n_splits)](
        q, k, v, mask, o, lse, scale, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), t, s, h, split_len, N_REP=n_rep, D=d, BD=bd, BLOCK_H=block_h,
        BLOCK_N=block_n, PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4, num_stages=2)
    out = torch.empty(b, h, t, d, dtype=q.dtype, device=q.device)
    merge_splits_into(out.transpose(1, 2), o, lse, t)  # written through a [B, T, H, D] view
    return out
