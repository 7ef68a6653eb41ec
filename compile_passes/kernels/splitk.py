"""Pieces shared by the split-K (flash-decoding) attention kernels: the online-softmax step, the per-split
store, the split plan and the log-sum-exp merge of the splits."""
import functools

import torch
import triton
import triton.language as tl


@triton.jit
def online_softmax_step(s, allowed, v, m_i, l_i, acc, PRECISION: tl.constexpr):
    """Fold one key block into the running (max, sum, weighted values). s: raw scaled scores [H, N]."""
    s = tl.where(allowed[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    p = tl.exp(s - m_new[:, None])
    alpha = tl.exp(m_i - m_new)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, axis=1), acc


@triton.jit
def store_split(o_ptr, lse_ptr, row, acc, l_i, m_i, hm, BD: tl.constexpr):
    """This split's normalized output and log-sum-exp (-inf and zeros when it saw no allowed key)."""
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    d = tl.arange(0, BD)
    tl.store(o_ptr + row[:, None] * BD + d[None, :], out, mask=hm[:, None])
    tl.store(lse_ptr + row, tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf")), mask=hm)


def cdiv(a, b):
    return -(-a // b)


@functools.cache
def _sms(device):
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def split_plan(s, block_n, programs, device, n_splits=None, programs_per_sm=2):
    """(split length, number of splits): whole key blocks per split, enough programs to fill the GPU."""
    if n_splits is None:
        n_splits = max(1, min(cdiv(s, block_n), cdiv(programs_per_sm * _sms(device), programs)))
    split_len = cdiv(cdiv(s, n_splits), block_n) * block_n
    return split_len, cdiv(s, split_len)


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, T, H, n_splits, width, out_b, out_t, out_h,
                  BD: tl.constexpr, BS: tl.constexpr):
    """One program per (query, head): softmax(lse)-weighted sum of the splits' outputs, in the output dtype."""
    q = tl.program_id(0)
    h = tl.program_id(1)
    row = q * H + h
    sp = tl.arange(0, BS)
    d = tl.arange(0, BD)
    lse = tl.load(lse_ptr + row * n_splits + sp, mask=sp < n_splits, other=float("-inf"))
    top = tl.max(lse, axis=0)
    w = tl.exp(lse - tl.where(top == float("-inf"), 0.0, top))  # splits that saw no key weigh 0
    o = tl.load(o_ptr + (row * n_splits + sp[:, None]) * BD + d[None, :],
                mask=(sp[:, None] < n_splits) & (d[None, :] < width), other=0.0)
    out = tl.sum(w[:, None] * o, axis=0) / tl.maximum(tl.sum(w, axis=0), 1e-30)
    tl.store(out_ptr + (q // T) * out_b + (q % T) * out_t + h * out_h + d, out.to(out_ptr.dtype.element_ty),
             mask=d < width)


def merge_splits_into(out, o, lse, t):
    """The Triton merge: o [B*T, H, splits, BD], lse [B*T, H, splits] -> out, a [B, T, H, width] view of any
    strides (width = out.shape[-1]), written in out's dtype. One launch instead of a dozen torch ops."""
    q, h, n_splits, bd = o.shape
    _merge_kernel[(q, h)](o, lse, out, t, h, n_splits, out.shape[-1], out.stride(0), out.stride(1),
                          out.stride(2), BD=bd, BS=triton.next_power_of_2(n_splits), num_warps=1)
    return out
