"""GQA attention for short query runs (decode) over a static KV cache, driven by each row's token window:
split-K flash-decoding over the visible keys only.

A program takes the n_rep query heads that share one kv head, for one query and one split of that query's visible
keys [key_start[b], query slot] (nothing if the query lies outside its row's window), so each K/V tile is read once
per group (no repeat_interleave copy) and no slot outside the window is read: a short history in a long static
cache costs what the history costs. The grid is fixed (CUDA-graph safe); each split's range is computed on the
device from the window. Splits merge by log-sum-exp. Bound: bytes (the visible K/V, once per kv head).
"""
import torch
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs
from .splitk import merge_splits_into, online_softmax_step, split_plan, store_split


@triton.jit
def _gqa_window_kernel(q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, slot_ptr, o_ptr, lse_ptr, active_ptr, scale, window,
                       q_b, q_h, q_t, k_b, k_h, k_s, v_b, v_h, v_s, T, H, N_REP: tl.constexpr, D: tl.constexpr,
                       BD: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, MIN_SPAN: tl.constexpr,
                       PRECISION: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    bt = tl.program_id(0)
    g = tl.program_id(1)
    sp = tl.program_id(2)
    n_splits = tl.num_programs(2)
    b = bt // T
    t = bt % T
    lo = tl.load(start_ptr + b)
    slot = tl.load(slot_ptr + t)
    inside = (slot >= lo) & (slot < tl.load(end_ptr + b))
    lo = tl.where(window > 0, tl.maximum(lo, slot - window + 1), lo)  # a sliding-window layer: the last `window`
    hi = tl.where(inside, slot + 1, lo)  # visible keys: [lo, hi)
    # whole blocks per split, at least MIN_SPAN keys: a short window uses few splits (the rest exit at once, and
    # the merge reads only the splits used), a long one spreads over all of them
    span = tl.maximum(tl.cdiv(tl.cdiv(hi - lo, n_splits), BLOCK_N) * BLOCK_N, MIN_SPAN)
    if (sp == 0) & (g == 0):
        tl.store(active_ptr + bt, tl.cdiv(hi - lo, span).to(tl.int32))
    s0 = lo + sp * span
    if s0 >= hi:
        return
    s1 = tl.minimum(s0 + span, hi)
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
    for n0 in range(s0, s1, BLOCK_N):
        offs = n0 + tl.arange(0, BLOCK_N)
        allowed = offs < s1  # only the last block of a split is partial
        kv_mask = allowed[:, None] & dm[None, :]
        k = tl.load(k_ptr + b * k_b + g * k_h + offs[:, None] * k_s + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + b * v_b + g * v_h + offs[:, None] * v_s + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        m_i, l_i, acc = online_softmax_step(s * scale, allowed, v, m_i, l_i, acc, PRECISION)
    store_split(o_ptr, lse_ptr, (bt * H + heads) * n_splits + sp, acc, l_i, m_i, hm, BD)


def gqa_window_decode_triton(q, k, v, key_start, key_end, query_slots, scale, block_n=None, n_splits=None,
                             min_span=256, window=0, programs_per_sm=1, num_warps=4, num_stages=None):
    """q [B, H, T, D], k/v [B, Hkv, S, D]; key_start/key_end [B], query_slots [T] (long) -> [B, H, T, D] with
    [B, T, H, D] memory (what the output projection reads). Query t of row b sees slots
    key_start[b] <= j <= query_slots[t] when key_start[b] <= query_slots[t] < key_end[b], else nothing (zeros);
    window > 0: only the last `window` of those (j > query_slots[t] - window)."""
    b, h, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    # Defaults from bench/window_sweep.py on the H200 (Qwen3-VL-2B, one query, 8 kv heads of 128, bf16; 28 calls in
    # a CUDA graph): 128-key blocks, splits of >= 256 keys, one program per SM, a 3-stage pipeline: 11.6 / 35.4 us per
    # layer at 8192 / 30000 keys of context, against 12.7 / 41.2 for ~4 programs per SM and 2 stages (fewer, longer
    # splits stream better once the loads are pipelined). fp32 or wider heads: 64-key blocks, 2 stages (shared memory).
    wide = q.element_size() > 2 or d > 128
    if block_n is None:
        block_n = 64 if wide else 128
    if num_stages is None:
        num_stages = 2 if wide else 3
    n_rep = h // hkv
    # the kernel indexes these by row: a broadcast view (the decode's key_end is one slot expanded) must be copied
    key_start, key_end, query_slots = key_start.contiguous(), key_end.contiguous(), query_slots.contiguous()
    assert k.stride(-1) == v.stride(-1) == q.stride(-1) == 1 and v.shape[-1] == d
    bd = triton.next_power_of_2(max(d, 16))
    block_h = max(16, triton.next_power_of_2(n_rep))
    # Splits for the longest window, enough programs to give every SM `programs_per_sm`: each split's share of its
    # window is computed on the device.
    _, n_splits = split_plan(s, block_n, b * t * hkv, q.device, n_splits, programs_per_sm=programs_per_sm)
    o = torch.empty(b * t, h, n_splits, bd, dtype=torch.float32, device=q.device)
    lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q.device)
    active = torch.empty(b * t, dtype=torch.int32, device=q.device)
    _gqa_window_kernel[(b * t, hkv, n_splits)](
        q, k, v, key_start, key_end, query_slots, o, lse, active, scale, window, q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), t, h, N_REP=n_rep, D=d, BD=bd,
        BLOCK_H=block_h, BLOCK_N=block_n, MIN_SPAN=max(block_n, min_span // block_n * block_n),
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=num_warps, num_stages=num_stages,
        **pdl_launch(q))
    out = torch.empty(b, t, h, d, dtype=q.dtype, device=q.device)
    merge_splits_into(out, o, lse, t, active)
    return out.transpose(1, 2)
