"""Absorbed-MLA attention for short query runs (decode): split-K flash-decoding over the shared latent.

One kv head of width C + R (512 + 64) serves all H query heads, so a program takes BLOCK_H heads of one
query and one split of the keys: each kv tile is loaded once for BLOCK_H heads (like SGLang's grouped decode
and FlashMLA). Key blocks with no allowed key (mask) are skipped, so a short history costs little even in a
long static cache. Stage 2 merges the splits with their log-sum-exps.
"""
import torch
import triton
import triton.language as tl


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
            s = tl.where(allowed[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            acc = acc * alpha[:, None] + tl.dot(p.to(kv.dtype), kv, input_precision=PRECISION)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            m_i = m_new
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    row = (bt * H + heads) * n_splits + sp
    tl.store(o_ptr + row[:, None] * BC + c[None, :], out, mask=hm[:, None])
    tl.store(lse_ptr + row, tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf")), mask=hm)


def _cdiv(a, b):
    return -(-a // b)


def mla_decode_triton(q_lat, q_pe, kv, pe, mask, scale, block_h=16, block_n=32, n_splits=None):
    """q_lat [B, T, H, C], q_pe [B, T, H, R], kv [B, S, C], pe [B, S, R], mask bool [B, 1, T, S] -> [B, T, H, C]."""
    b, t, h, c = q_lat.shape
    s, r = kv.shape[1], pe.shape[-1]
    if q_lat.stride(-1) != 1 or q_pe.stride(-1) != 1 or q_lat.stride(0) != t * q_lat.stride(1) or \
            q_pe.stride(0) != t * q_pe.stride(1):
        q_lat, q_pe = q_lat.contiguous(), q_pe.contiguous()
    mask = mask.reshape(b * t, s).contiguous()
    bc, br = triton.next_power_of_2(max(c, 16)), triton.next_power_of_2(max(r, 16))
    head_blocks = _cdiv(h, block_h)
    if n_splits is None:  # enough programs to fill the GPU, splits of whole key blocks
        sms = torch.cuda.get_device_properties(q_lat.device).multi_processor_count if q_lat.is_cuda else 4
        n_splits = max(1, min(_cdiv(s, block_n), _cdiv(2 * sms, b * t * head_blocks)))
    split_len = _cdiv(_cdiv(s, n_splits), block_n) * block_n
    n_splits = _cdiv(s, split_len)
    o = torch.empty(b * t, h, n_splits, bc, dtype=torch.float32, device=q_lat.device)
    lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q_lat.device)
    _mla_split_kernel[(b * t, head_blocks, n_splits)](
        q_lat, q_pe, kv, pe, mask, o, lse, scale, q_lat.stride(1), q_lat.stride(2), q_pe.stride(1), q_pe.stride(2),
        kv.stride(0), kv.stride(1), pe.stride(0), pe.stride(1), t, h, s, split_len, C=c, R=r, BC=bc, BR=br,
        BLOCK_H=block_h, BLOCK_N=block_n, num_warps=4, num_stages=2,
        PRECISION="ieee" if q_lat.dtype == torch.float32 else "tf32")  # fp32 in, fp32 math (no TF32)
    # merge splits: weights softmax(lse) over splits; a query with no allowed key gives zeros
    top = lse.amax(-1, keepdim=True)
    w = torch.exp(lse - torch.where(torch.isfinite(top), top, 0.0))
    out = (w[..., None] * o[..., :c]).sum(2) / w.sum(-1, keepdim=True).clamp_min(1e-30)
    return out.view(b, t, h, c).to(q_lat.dtype)
