"""Absorbed-MLA attention for short query runs (decode): split-K flash-decoding over the shared latent.

One kv head of width C + R (512 + 64) serves all H query heads, so a program takes BLOCK_H heads of one
query and one split of the keys: each kv tile is loaded once for BLOCK_H heads (like SGLang's grouped decode
and FlashMLA). Key blocks with no allowed key (mask) are skipped, so a short history costs little even in a
long static cache. Stage 2 merges the splits with their log-sum-exps.
"""
import torch
import triton
import triton.language as tl

from .splitk import merge_splits_into, online_softmax_step, split_plan, store_split


@triton.jit
def _mla_split_kernel(ql_ptr, qp_ptr, kv_ptr, pe_ptr, mask_ptr, o_ptr, lse_ptr, scale,
                      ql_bt, ql_h, qp_bt, qp_h, kv_b, kv_s, pe_b, pe_s, T, H, S, split_len,
                      C: tl.constexpr, R: tl.constexpr, BC: tl.constexpr, BR: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    bt = tl.program_id(0)
    hb = tl.program_id(1)
    sp = tl.program_id(2)
    n_splits = tl.num_programs(2)
    b = bt // T
    heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    hm = heads < H
    c = tl.arange(0, BC)
    r = tl.arange(0, BR)
    q_lat = tl.load(ql_ptr + bt * ql_bt + heads[:, None] * ql_h + c[None, :], mask=hm[:, None] & (c[None, :] < C),
                    other=0.0)
    q_pe = tl.load(qp_ptr + bt * qp_bt + heads[:, None] * qp_h + r[None, :], mask=hm[:, None] & (r[None, :] < R),
                   other=0.0)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BC], tl.float32)
    start = sp * split_len
    end = tl.minimum(start + split_len, S)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        allowed = tl.load(mask_ptr + bt * S + offs, mask=offs < end, other=0) != 0
        if tl.max(allowed.to(tl.int32), axis=0) > 0:
            kv = tl.load(kv_ptr + b * kv_b + offs[:, None] * kv_s + c[None, :],
                         mask=allowed[:, None] & (c[None, :] < C), other=0.0)
            pe = tl.load(pe_ptr + b * pe_b + offs[:, None] * pe_s + r[None, :],
                         mask=allowed[:, None] & (r[None, :] < R), other=0.0)
            s = tl.dot(q_lat, tl.trans(kv), input_precision=PRECISION) + \
                tl.dot(q_pe, tl.trans(pe), input_precision=PRECISION)  # [BLOCK_H, BLOCK_N] fp32
            m_i, l_i, acc = online_softmax_step(s * scale, allowed, kv, m_i, l_i, acc, PRECISION)  # values = kv
    store_split(o_ptr, lse_ptr, (bt * H + heads) * n_splits + sp, acc, l_i, m_i, hm, BC)


def mla_decode_triton(q_lat, q_pe, kv, pe, mask, scale, block_h=16, block_n=32, n_splits=None):
    """q_lat [B, T, H, C], q_pe [B, T, H, R], kv [B, S, C], pe [B, S, R], mask bool [B, 1, T, S] -> [B, T, H, C]."""
    b, t, h, c = q_lat.shape
    s, r = kv.shape[1], pe.shape[-1]
    if q_lat.stride(-1) != 1 or q_pe.stride(-1) != 1 or q_lat.stride(0) != t * q_lat.stride(1) or \
            q_pe.stride(0) != t * q_pe.stride(1):
        q_lat, q_pe = q_lat.contiguous(), q_pe.contiguous()
    mask = mask.reshape(b * t, s).contiguous()
    bc, br = triton.next_power_of_2(max(c, 16)), triton.next_power_of_2(max(r, 16))
    head_blocks = -(-h // block_h)
    split_len, n_splits = split_plan(s, block_n, b * t * head_blocks, q_lat.device, n_splits)
    o = torch.empty(b * t, h, n_splits, bc, dtype=torch.float32, device=q_lat.device)
    lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q_lat.device)
    _mla_split_kernel[(b * t, head_blocks, n_splits)](
        q_lat, q_pe, kv, pe, mask, o, lse, scale, q_lat.stride(1), q_lat.stride(2), q_pe.stride(1), q_pe.stride(2),
        kv.stride(0), kv.stride(1), pe.stride(0), pe.stride(1), t, h, s, split_len, C=c, R=r, BC=bc, BR=br,
        BLOCK_H=block_h, BLOCK_N=block_n, num_warps=4, num_stages=2,
        PRECISION="ieee" if q_lat.dtype == torch.float32 else "tf32")  # fp32 in, fp32 math (no TF32)
    return merge_splits_into(torch.empty_like(q_lat, memory_format=torch.contiguous_format), o, lse, t)
