"""Pieces shared by the split-K (flash-decoding) attention kernels: the online-softmax step, the per-split
store, the split plan and the log-sum-exp merge of the splits."""
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


def split_plan(s, block_n, programs, device, n_splits=None):
    """(split length, number of splits): whole key blocks per split, enough programs to fill the GPU."""
    if n_splits is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        n_splits = max(1, min(cdiv(s, block_n), cdiv(2 * sms, programs)))
    split_len = cdiv(cdiv(s, n_splits), block_n) * block_n
    return split_len, cdiv(s, split_len)


def merge_splits(o, lse, width):
    """o [Q, H, splits, BD], lse [Q, H, splits] -> [Q, H, width]: softmax(lse)-weighted sum over splits;
    a query with no allowed key anywhere gives zeros."""
    top = lse.amax(-1, keepdim=True)
    w = torch.exp(lse - torch.where(torch.isfinite(top), top, 0.0))
    return (w[..., None] * o[..., :width]).sum(2) / w.sum(-1, keepdim=True).clamp_min(1e-30)
