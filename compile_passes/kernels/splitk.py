"""Pieces shared by the split-K (flash-decoding) attention kernels: the online-softmax step, the per-split
store, the split plan and the log-sum-exp merge of the splits."""
import functools

import torch
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs


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
def _merge_kernel(o_ptr, lse_ptr, active_ptr, out_ptr, T, H, n_splits, width, out_b, out_t, out_h,
                  HAS_ACTIVE: tl.constexpr, BD: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
                  USE_PDL: tl.constexpr):
    """One program per (query, head, BLOCK_D output columns): softmax(lse)-weighted sum of the splits' outputs, in
    the output dtype. Splits are folded CHUNK at a time (online rescaling; CHUNK covers every split in one pass up
    to 64 of them, 128 when the grid splits columns, so a program waits for memory once); with HAS_ACTIVE only the
    first active[query] splits are read (the window kernels store nothing in the others), else all n_splits.
    Columns split over the grid so that a batch-1 query with 128 heads of 512 still spreads over the whole GPU."""
    wait_for_inputs(USE_PDL)
    q = tl.program_id(0)
    h = tl.program_id(1)
    row = q * H + h
    n = tl.load(active_ptr + q) if HAS_ACTIVE else n_splits
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    m = tl.full([1], float("-inf"), tl.float32)
    total = tl.zeros([1], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for c in range(0, n, CHUNK):
        sp = c + tl.arange(0, CHUNK)
        ok = sp < n
        lse = tl.load(lse_ptr + row * n_splits + sp, mask=ok, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, axis=0))
        base = tl.where(m_new == float("-inf"), 0.0, m_new)  # splits that saw no key weigh 0
        w = tl.exp(lse - base)
        alpha = tl.exp(m - base)
        o = tl.load(o_ptr + (row * n_splits + sp[:, None]) * BD + d[None, :], mask=ok[:, None] & (d[None, :] < width),
                    other=0.0)
        acc = acc * alpha + tl.sum(w[:, None] * o, axis=0)
        total = total * alpha + tl.sum(w, axis=0)
        m = m_new
    out = acc / tl.maximum(total, 1e-30)
    tl.store(out_ptr + (q // T) * out_b + (q % T) * out_t + h * out_h + d, out.to(out_ptr.dtype.element_ty),
             mask=d < width)


def merge_splits_into(out, o, lse, t, active=None):
    """The Triton merge: o [B*T, H, splits, BD], lse [B*T, H, splits] -> out, a [B, T, H, width] view of any
    strides (width = out.shape[-1]), written in out's dtype. active: int32 [B*T] splits to read per query (None:
    all). One launch instead of a dozen torch ops."""
    q, h, n_splits, bd = o.shape
    # columns over the grid only when (query, head) programs are few (batch-1 MLA: 128 of them; there up to 128
    # splits in one pass, 64 columns a program: H200, B=1 at 32768 history, 66 splits: two passes took 15 us);
    # else whole rows
    if q * h >= 1024:
        block_d, chunk = bd, min(64, triton.next_power_of_2(n_splits))
    else:
        chunk = min(128, triton.next_power_of_2(n_splits))
        block_d = min(bd, 128, 8192 // chunk)
    grid = (q, h, cdiv(out.shape[-1], block_d))
    # 4 warps a program only for big tiles in a grid that leaves SMs idle (batch-1 dense decode with few kv heads:
    # 64 splits x 128 columns, a dozen programs); with many programs 2 warps each measured faster (batch-1 MLA,
    # 128 heads x 8 column blocks, 66 splits: 37.2 -> 34.3 us graphed at history 32768, H200, thirteenth session)
    big = chunk * block_d >= 8192 and grid[0] * grid[1] * grid[2] < _sms(o.device)
    _merge_kernel[grid](
        o, lse, lse if active is None else active, out, t, h, n_splits, out.shape[-1], out.stride(0), out.stride(1),
        out.stride(2), HAS_ACTIVE=active is not None, BD=bd, BLOCK_D=block_d, CHUNK=chunk, num_warps=4 if big else 2,
        **pdl_launch(o))
    return out
