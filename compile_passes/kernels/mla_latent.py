"""Absorbed-MLA attention over the latent cache, driven by each row's lengths (decode and prefill).

One kv head of width C + R (512 + 64 for DeepSeek-V3/R1) serves all H query heads. Following FlashMLA, a program
takes BLOCK_H = 64 heads of one query, so the score and value products are [64, 576] x [576, N] and [64, N] x
[N, 512] tensor-core MMAs (wgmma on Hopper: M = 64 per warpgroup), and each kv tile, loaded once into shared
memory, is both the key (with its rope part) and the value. The two head blocks of a query are neighbours in the
grid, so the second reads the tile from L2. Query t of row b sits at slot start_pos[b] + t and sees slots
0 .. start_pos[b] + t when t < seq_lens[b] (else nothing: zeros), as zoo_ref's attention_mask says; only those
slots are read, no mask exists. The keys split over the grid's second axis only when the batch does not fill the
GPU (split-KV); each split's range is computed on the device from the row's length (CUDA-graph safe), splits past
it exit, and a merge reads only the splits used. With one split the kernel writes the output itself.
Bound: at B = 128, history 4096 the kv bytes (604 MB: 0.20 ms at 3 TB/s) and the MMAs (146 GFLOP: 0.19 ms at
790 TFLOP/s) cost about the same; B = 1 is bandwidth-bound. Measured on the H100 (bench/RESULTS.md): 0.54 ms there
(40% of the floor), 63 us at B = 1 / 32768; a tile costs ~4 us per program, latency-bound on one instruction stream
(FlashMLA hides it by warp specialization). The sweep in bench/mla_kernel.py picked 64 heads / 64 keys / 8 warps /
2 stages on every shape measured. On Hopper every bf16 call at DeepSeek's widths runs mla_latent_ws.py instead
(FlashMLA's warp-specialized schedule, same contract and split-KV: 1.8x faster at B = 128 / 4096, 1.3x at B = 1 /
32768; launched from mla_latent_gluon.py); this kernel serves the rest (fp32, other widths and head counts, other
GPUs, the interpreter).
"""
import torch
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs
from .splitk import cdiv, merge_splits_into, online_softmax_step, split_plan, store_split


@triton.jit
def _fold_tile(q_lat, q_pe, kv_row, pe_row, kv_s, pe_s, n0, s1, m_i, l_i, acc, scale, C: tl.constexpr,
               R: tl.constexpr, BC: tl.constexpr, BR: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               PRECISION: tl.constexpr):
    """Fold kv slots [n0, n0 + BLOCK_N) (those below s1) into the running softmax: the tile is the key (with its
    rope part) and the value. MASKED: bounds-checked loads (a partial tile, or widths that are not powers of 2)."""
    offs = n0 + tl.arange(0, BLOCK_N)
    c = tl.arange(0, BC)
    r = tl.arange(0, BR)
    rows = offs < s1
    if MASKED:
        kv = tl.load(kv_row + offs[:, None] * kv_s + c[None, :], mask=rows[:, None] & (c[None, :] < C), other=0.0)
        pe = tl.load(pe_row + offs[:, None] * pe_s + r[None, :], mask=rows[:, None] & (r[None, :] < R), other=0.0)
    else:
        kv = tl.load(kv_row + offs[:, None] * kv_s + c[None, :])
        pe = tl.load(pe_row + offs[:, None] * pe_s + r[None, :])
    s = tl.dot(q_lat, tl.trans(kv), input_precision=PRECISION)
    s = tl.dot(q_pe, tl.trans(pe), acc=s, input_precision=PRECISION)  # [BLOCK_H, BLOCK_N] fp32
    return online_softmax_step(s * scale, rows, kv, m_i, l_i, acc, PRECISION)  # values = kv


@triton.jit
def _mla_latent_kernel(ql_ptr, qp_ptr, kv_ptr, pe_ptr, start_ptr, lens_ptr, rows_ptr, out_ptr, o_ptr, lse_ptr,
                       active_ptr, scale, ql_b, ql_t, ql_h, qp_b, qp_t, qp_h, kv_b, kv_s, pe_b, pe_s, out_b, out_t,
                       out_h, T, H, S,
                       C: tl.constexpr, R: tl.constexpr, BC: tl.constexpr, BR: tl.constexpr, BLOCK_H: tl.constexpr,
                       BLOCK_N: tl.constexpr, MIN_SPAN: tl.constexpr, SINGLE: tl.constexpr,
                       MASK_WHOLE: tl.constexpr, PRECISION: tl.constexpr, HAS_ROWS: tl.constexpr,
                       USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    hb = tl.program_id(0)  # fastest: the head blocks of one (query, split) run together and share the kv tiles
    sp = tl.program_id(1)
    bt = tl.program_id(2)
    n_splits = tl.num_programs(1)
    b = bt // T
    t = bt % T
    hi = tl.where(t < tl.load(lens_ptr + b), tl.load(start_ptr + b) + t + 1, 0)  # visible slots: [0, hi)
    hi = tl.minimum(hi, S)  # past the cache only on an overflow, which the caller refuses after the step
    span = tl.maximum(tl.cdiv(tl.cdiv(hi, n_splits), BLOCK_N) * BLOCK_N, MIN_SPAN)
    if not SINGLE:
        if (sp == 0) & (hb == 0):
            tl.store(active_ptr + bt, tl.cdiv(hi, span).to(tl.int32))
        if sp * span >= hi:
            return
    s0 = sp * span
    s1 = tl.minimum(s0 + span, hi)
    heads = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    hm = heads < H
    c = tl.arange(0, BC)
    r = tl.arange(0, BR)
    q_lat = tl.load(ql_ptr + b * ql_b + t * ql_t + heads[:, None] * ql_h + c[None, :],
                    mask=hm[:, None] & (c[None, :] < C), other=0.0)
    q_pe = tl.load(qp_ptr + b * qp_b + t * qp_t + heads[:, None] * qp_h + r[None, :],
                   mask=hm[:, None] & (r[None, :] < R), other=0.0)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BC], tl.float32)
    kb = b.to(tl.int64)
    if HAS_ROWS:  # batch row b reads cache row rows[b] (packed prompt tokens, each its own batch row)
        kb = tl.load(rows_ptr + b).to(tl.int64)
    kv_row, pe_row = kv_ptr + kb * kv_b, pe_ptr + kb * pe_b
    full = s0 + (s1 - s0) // BLOCK_N * BLOCK_N
    for n0 in range(s0, full, BLOCK_N):  # whole tiles: no bounds to check
        m_i, l_i, acc = _fold_tile(q_lat, q_pe, kv_row, pe_row, kv_s, pe_s, n0, s1, m_i, l_i, acc, scale, C, R, BC,
                                   BR, BLOCK_N, MASK_WHOLE, PRECISION)
    if full < s1:  # the split's partial last tile: slots past it are never read (they may hold stale NaN)
        m_i, l_i, acc = _fold_tile(q_lat, q_pe, kv_row, pe_row, kv_s, pe_s, full, s1, m_i, l_i, acc, scale, C, R,
                                   BC, BR, BLOCK_N, True, PRECISION)
    if SINGLE:  # the whole row in this program: normalize and write the output (zeros if it saw nothing)
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + b * out_b + t * out_t + heads[:, None] * out_h + c[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=hm[:, None] & (c[None, :] < C))
    else:
        store_split(o_ptr, lse_ptr, (bt * H + heads) * n_splits + sp, acc, l_i, m_i, hm, BC)


def mla_latent_triton(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, block_h=64, block_n=64, n_splits=None,
                      num_warps=8, num_stages=2, min_span=64, stats=None, kv_rows=None):
    """q_lat [B, T, H, C], q_pe [B, T, H, R] (last dim contiguous), kv [B, S, C], pe [B, S, R] (the static cache),
    start_pos / seq_lens [B] long on the device -> o_lat [B, T, H, C] = zoo_ref's latent_attention under
    attention_mask(token_slots(start_pos, seq_lens, T), S). kv_rows [B] (optional): batch row b reads cache row
    kv_rows[b] (kv / pe may then have any number of rows)."""
    b, t, h, c = q_lat.shape
    s, r = kv.shape[1], pe.shape[-1]
    start_pos, seq_lens = start_pos.contiguous(), seq_lens.contiguous()  # indexed by row: no broadcast views
    assert q_lat.stride(-1) == q_pe.stride(-1) == kv.stride(-1) == pe.stride(-1) == 1
    bc, br = triton.next_power_of_2(max(c, 16)), triton.next_power_of_2(max(r, 16))
    block_h = min(block_h, max(16, triton.next_power_of_2(h)))
    head_blocks = cdiv(h, block_h)
    # one split when the batch fills the GPU (one program per SM: a 64-head program holds most of its shared
    # memory); otherwise the longest row's keys spread so that every SM gets a program
    _, n_splits = split_plan(s, block_n, b * t * head_blocks, q_lat.device, n_splits, programs_per_sm=1)
    out = torch.empty(b, t, h, c, dtype=q_lat.dtype, device=q_lat.device)
    single = n_splits == 1
    o = lse = active = out  # unused with one split
    if not single:
        # partial outputs (normalized) in the input's dtype: half the merge's bytes for bf16, which at B = 1 and a
        # long history are a fifth of the kv bytes; fp32 stays fp32
        o = torch.empty(b * t, h, n_splits, bc, dtype=q_lat.dtype, device=q_lat.device)
        lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q_lat.device)
        active = torch.empty(b * t, dtype=torch.int32, device=q_lat.device)
    kernel = _mla_latent_kernel[(head_blocks, n_splits, b * t)](
        q_lat, q_pe, kv, pe, start_pos, seq_lens, start_pos if kv_rows is None else kv_rows.contiguous(), out, o,
        lse, active, scale, q_lat.stride(0), q_lat.stride(1),
        q_lat.stride(2), q_pe.stride(0), q_pe.stride(1), q_pe.stride(2), kv.stride(0), kv.stride(1), pe.stride(0),
        pe.stride(1), out.stride(0), out.stride(1), out.stride(2), t, h, s, C=c, R=r, BC=bc, BR=br, BLOCK_H=block_h,
        BLOCK_N=block_n, MIN_SPAN=max(block_n, min_span // block_n * block_n), SINGLE=single,
        MASK_WHOLE=bc != c or br != r,  # widths that are not powers of 2 (tiny test configs): every load checked
        PRECISION="ieee" if q_lat.dtype == torch.float32 else "tf32",  # fp32 in, fp32 math (no TF32)
        HAS_ROWS=kv_rows is not None, num_warps=num_warps, num_stages=num_stages, **pdl_launch(q_lat))
    if stats is not None:  # for the benchmark's config sweep
        stats.update(n_regs=kernel.n_regs, n_spills=kernel.n_spills, splits=n_splits)
    if not single:
        merge_splits_into(out, o, lse, t, active)
    return out
