"""Absorbed-MLA attention over the latent cache in Gluon, warp-specialized as FlashMLA's Hopper decode kernel.

One program = 64 heads of one query and one split of its keys, two warpgroups, taken in pairs of 64-key tiles:
- warpgroup w computes the scores of tile 2k + w alone (Q [64, 576] @ K_w^T, N = 64), its softmax against the
  running row max that the two share through shared memory (WG0 first, then WG1 from WG0's max), and then
  O[:, half w] += P_w @ V_w[:, half w] (its own P from registers) + P_other @ V_other[:, half w] (the other's P
  from shared memory, put where the other tile's rope columns were: the scores no longer need them);
- so one warpgroup's softmax runs while the other's MMAs do, and the tensor cores see N = 64 score MMAs (the
  single-stream kernel split each tile's keys over both warpgroups: N = 32, both reading the whole query);
- a tile slot's halves are refilled by the warpgroup that last reads them (value columns 0-255 by WG0, 256-511 and
  the rope by WG1) as soon as it has, with cp.async (masked: slots past the row's length are zeros, never read) and
  an mbarrier each that the copies arrive on.
Split-KV when the (query, head block) programs do not fill the GPU: whole tile pairs per split from the row's own
length (CUDA-graph safe), splits past it exit, splitk's merge folds the splits a query used.
Shared memory: the query (72 KB) and two tile slots (2 x 72 KB), 216 KB: one program per SM.
Bound (H200, bench/RESULTS.md, tenth session): B = 128 / history 4096 in 282-301 us, 61-66% of the FLOP floor
(the single-stream Gluon kernel before it: 351 us, the Triton kernel 541). Every program loads its query's tiles
(two head blocks per query: the cache crosses L2 -> SM twice, 1.2 GB here, ~4 TB/s), a pair of tiles = 144 KB per SM
per ~4.6 us; two slots leave no room to load a pair ahead, so the next pair's loads start when its slots free.
Loading each tile once for both head blocks (2-CTA clusters, TMA multicast) is what is left.
"""
import triton.language as tl
from triton.experimental import gluon  # Gluon ships with Triton >= 3.4; mla_latent_gluon.py imports this guarded
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.ampere import async_copy

# names that moved between Triton releases: cp.async into shared memory (async_copy_global_to_shared up to 3.6,
# async_load later) and the block-wide barrier (thread_barrier, later barrier)
_cp_async = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
_barrier = getattr(gl, "thread_barrier", None) or gl.barrier

LOG2E, LN2 = 1.4426950408889634, tl.constexpr(0.6931471805599453)
# heads per program, keys per tile, latent and rope widths, value columns per warpgroup (constexpr: the kernels
# read them as globals)
BLOCK_H, BLOCK_N, C, R, HALF = (tl.constexpr(64), tl.constexpr(64), tl.constexpr(512), tl.constexpr(64),
                                tl.constexpr(256))
# register layouts of one warpgroup: scores [64, 64] and output half [64, 256] as wgmma accumulators, P as the
# P·V MMA's register operand, and the loads' 16-byte cp.async vectors (a warp per row of 256, 4 rows of 64)
MMA_S = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16]))
MMA_O = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 256, 16]))
P_OP = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=MMA_O.value, k_width=2))
LD = gl.constexpr(gl.BlockedLayout([1, 8], [1, 32], [4, 1], [1, 0]))
LD_PE = gl.constexpr(gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0]))
ROWS_S, ROWS_O = gl.constexpr(gl.SliceLayout(1, MMA_S.value)), gl.constexpr(gl.SliceLayout(1, MMA_O.value))  # per row


@gluon.jit
def _load_rows(buf, row_ptr, row_s, r0, s1, c0: gl.constexpr, W: gl.constexpr, ld: gl.constexpr):
    """cp.async of rows [r0, r0 + 64) of the matrix at row_ptr (row stride row_s), columns [c0, c0 + W), into
    buf [64, W]: zeros from row s1 on. Only the scalar base moves with the tile (a tile of pointers that does not
    would be hoisted out of the loop and held in registers)."""
    base = row_ptr + r0 * row_s
    n_rows = s1 - r0
    rows = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, ld))
    cols = gl.arange(0, W, layout=gl.SliceLayout(0, ld))
    ok = gl.expand_dims(rows < n_rows, 1) & gl.expand_dims(cols < W, 0)
    _cp_async(buf, base + (gl.expand_dims(rows * row_s, 1) + gl.expand_dims(c0 + cols, 0)), mask=ok)


@gluon.jit
def _views(ql_buf, qp_buf, kv_buf, pe_buf, n0):
    """This pair's views of the query and of both tile slots. `z` is 0 but neither LLVM nor ptxas can tell, and it
    changes with the tile: views of fixed buffers would let the compiler hoist all 36 + 36 wgmma descriptors of
    the score MMAs out of the loop and hold them in registers (spilling the accumulator)."""
    z = (n0 < 0).to(gl.int32)
    return (ql_buf.index(z), qp_buf.index(z), kv_buf.index(z), pe_buf.index(z), kv_buf.index(1 + z),
            pe_buf.index(1 + z))


@gluon.jit
def _scores(ql, qp, kv, pe, ready_l, ready_r, phase):
    """Q @ K^T of one slot [64 heads, 64 keys]: the first value half as soon as it has landed, then the rest."""
    gl.static_assert(C == 2 * HALF)
    zero = gl.zeros([BLOCK_H, BLOCK_N], gl.float32, layout=MMA_S)
    hopper.mbarrier.wait(ready_l, phase)
    hopper.fence_async_shared()
    s = hopper.warpgroup_mma(ql.slice(0, HALF, dim=1), kv.slice(0, HALF, dim=1).permute((1, 0)), zero,
                             use_acc=False, is_async=True)
    hopper.mbarrier.wait(ready_r, phase)
    hopper.fence_async_shared()
    s = hopper.warpgroup_mma(ql.slice(HALF, HALF, dim=1), kv.slice(HALF, HALF, dim=1).permute((1, 0)), s,
                             is_async=True)
    s = hopper.warpgroup_mma(qp, pe.permute((1, 0)), s, is_async=True)
    return hopper.warpgroup_mma_wait(0, deps=(s, ))


@gluon.jit
def _wg0(ql_buf, qp_buf, kv_buf, pe_buf, ready, m_smem, scale0, scale1, l0, l1, bars, kv_row, pe_row, kv_s, pe_s,
         s0, s1, n_pairs, scale_log2, dst, dst_h, lse_dst, lse_h):
    """Warpgroup 0: the even tiles' scores and softmax, value columns 0-255 of O."""
    keys = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, MMA_S))
    m_ready0, m_ready1, p_ready0, p_ready1, p_free1 = (bars.index(0), bars.index(1), bars.index(2), bars.index(3),
                                                       bars.index(4))
    l_i = gl.zeros([BLOCK_H], gl.float32, layout=ROWS_S)
    o = gl.zeros([BLOCK_H, HALF], gl.float32, layout=MMA_O)
    for k in range(0, n_pairs):
        phase = k & 1
        n0 = s0 + 2 * k * BLOCK_N  # this warpgroup's tile
        ql, qp, kv0, pe0, kv1, pe1 = _views(ql_buf, qp_buf, kv_buf, pe_buf, n0)
        s = _scores(ql, qp, kv0, pe0, ready.index(0), ready.index(1), phase)
        s = gl.where(gl.expand_dims(n0 + keys < s1, 0), s * scale_log2, float("-inf"))
        m_old = m_smem.load(ROWS_S)
        m_new = gl.maximum(m_old, gl.max(s, axis=1))
        base = gl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: P = 0, not NaN
        alpha = gl.exp2(m_old - base)
        _barrier()  # every thread has read the old max
        m_smem.store(m_new)
        scale0.store(alpha)
        _barrier()
        hopper.mbarrier.arrive(m_ready0)
        p = gl.exp2(s - gl.expand_dims(base, 1))
        l_i = l_i * alpha + gl.sum(p, axis=1)
        p16 = p.to(gl.bfloat16)
        o = o * gl.expand_dims(gl.convert_layout(alpha, ROWS_O), 1)
        o = hopper.warpgroup_mma(gl.convert_layout(p16, P_OP), kv0.slice(0, HALF, dim=1), o, is_async=True)
        # WG1's softmax rescales everything so far by beta; P0 goes to WG1 relative to the new max
        hopper.mbarrier.wait(m_ready1, phase)
        beta = scale1.load(ROWS_S)
        pe0.store((p16.to(gl.float32) * gl.expand_dims(beta, 1)).to(gl.bfloat16))  # the scores are done with it
        hopper.fence_async_shared()
        _barrier()
        hopper.mbarrier.arrive(p_ready0)
        o = hopper.warpgroup_mma_wait(0, deps=(o, ))
        _barrier()  # every warp's share of the P·V is done with the slot
        more = k + 1 < n_pairs
        if more:  # value columns 0-255 of slot 0: nobody reads them any more
            _load_rows(kv0.slice(0, HALF, dim=1), kv_row, kv_s, n0 + 2 * BLOCK_N, s1, 0, HALF, LD)
            async_copy.mbarrier_arrive(ready.index(0), increment_count=False)
        o = o * gl.expand_dims(gl.convert_layout(beta, ROWS_O), 1)
        l_i = l_i * beta
        hopper.mbarrier.wait(p_ready1, phase)
        hopper.fence_async_shared()
        o = hopper.warpgroup_mma(pe1, kv1.slice(0, HALF, dim=1), o, is_async=True)
        o = hopper.warpgroup_mma_wait(0, deps=(o, ))
        _barrier()
        hopper.mbarrier.arrive(p_free1)
        if more:  # slot 1's value columns 0-255: WG1's scores and both P·V are done with them
            _load_rows(kv1.slice(0, HALF, dim=1), kv_row, kv_s, n0 + 3 * BLOCK_N, s1, 0, HALF, LD)
            async_copy.mbarrier_arrive(ready.index(2), increment_count=False)
    # value columns 0-255 of slot 0: read by this warpgroup alone (its scores and P0 @ V), all done
    _finish(o, l_i, 0, m_smem, l0, l1, bars.index(5), bars.index(6), kv_buf.index(0).slice(0, HALF, dim=1), n_pairs,
            dst, dst_h, lse_dst, lse_h)


@gluon.jit
def _wg1(ql_buf, qp_buf, kv_buf, pe_buf, ready, m_smem, scale0, scale1, l0, l1, bars, kv_row, pe_row, kv_s, pe_s,
         s0, s1, n_pairs, scale_log2, dst, dst_h, lse_dst, lse_h):
    """Warpgroup 1: the odd tiles' scores and softmax, value columns 256-511 of O, and the loads of the value
    columns 256-511 and the rope."""
    keys = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, MMA_S))
    m_ready0, m_ready1, p_ready0, p_ready1, p_free1 = (bars.index(0), bars.index(1), bars.index(2), bars.index(3),
                                                       bars.index(4))
    l_i = gl.zeros([BLOCK_H], gl.float32, layout=ROWS_S)
    o = gl.zeros([BLOCK_H, HALF], gl.float32, layout=MMA_O)
    for k in range(0, n_pairs):
        phase = k & 1
        n0 = s0 + (2 * k + 1) * BLOCK_N  # this warpgroup's tile
        ql, qp, kv0, pe0, kv1, pe1 = _views(ql_buf, qp_buf, kv_buf, pe_buf, n0)
        s = _scores(ql, qp, kv1, pe1, ready.index(2), ready.index(3), phase)
        s = gl.where(gl.expand_dims(n0 + keys < s1, 0), s * scale_log2, float("-inf"))
        hopper.mbarrier.wait(m_ready0, phase)  # WG0's max of this pair and its rescale
        m_old = m_smem.load(ROWS_S)
        alpha = scale0.load(ROWS_S)
        m_new = gl.maximum(m_old, gl.max(s, axis=1))
        base = gl.where(m_new == float("-inf"), 0.0, m_new)
        beta = gl.exp2(m_old - base)
        _barrier()
        m_smem.store(m_new)
        scale1.store(beta)
        _barrier()
        hopper.mbarrier.arrive(m_ready1)
        p = gl.exp2(s - gl.expand_dims(base, 1))
        l_i = l_i * (alpha * beta) + gl.sum(p, axis=1)
        p16 = p.to(gl.bfloat16)
        pe1.store(p16)  # the scores are done with slot 1's rope columns
        hopper.fence_async_shared()
        _barrier()
        hopper.mbarrier.arrive(p_ready1)
        o = o * gl.expand_dims(gl.convert_layout(alpha * beta, ROWS_O), 1)
        more = k + 1 < n_pairs
        # the other's P first: slot 0 (the next pair's first scores) is then free one P·V earlier
        hopper.mbarrier.wait(p_ready0, phase)
        hopper.fence_async_shared()
        o = hopper.warpgroup_mma(pe0, kv0.slice(HALF, HALF, dim=1), o, is_async=True)
        o = hopper.warpgroup_mma(gl.convert_layout(p16, P_OP), kv1.slice(HALF, HALF, dim=1), o, is_async=True)
        o = hopper.warpgroup_mma_wait(1, deps=(o, ))
        _barrier()
        if more:  # slot 0's value columns 256-511 and its rope columns (P0 until now)
            _load_rows(kv0.slice(HALF, HALF, dim=1), kv_row, kv_s, n0 + BLOCK_N, s1, HALF, HALF, LD)
            _load_rows(pe0, pe_row, pe_s, n0 + BLOCK_N, s1, 0, R, LD_PE)
            async_copy.mbarrier_arrive(ready.index(1), increment_count=False)
        o = hopper.warpgroup_mma_wait(0, deps=(o, ))
        _barrier()
        if more:  # slot 1's value columns 256-511: read only by this warpgroup, done
            _load_rows(kv1.slice(HALF, HALF, dim=1), kv_row, kv_s, n0 + 2 * BLOCK_N, s1, HALF, HALF, LD)
        hopper.mbarrier.wait(p_free1, phase)  # WG0 has read P1 from slot 1's rope columns
        if more:
            _load_rows(pe1, pe_row, pe_s, n0 + 2 * BLOCK_N, s1, 0, R, LD_PE)
            async_copy.mbarrier_arrive(ready.index(3), increment_count=False)
    # value columns 256-511 of slot 1: read by this warpgroup alone (its scores and P1 @ V), all done
    _finish(o, l_i, 1, m_smem, l1, l0, bars.index(6), bars.index(5), kv_buf.index(1).slice(HALF, HALF, dim=1),
            n_pairs, dst, dst_h, lse_dst, lse_h)


@gluon.jit
def _finish(o, l_i, w: gl.constexpr, m_smem, l_mine, l_theirs, mine, theirs, o_smem, n_pairs, dst, dst_h, lse_dst,
            lse_h):
    """Both warpgroups' row sums -> this warpgroup's value half of the normalized output at dst (and, from WG1, the
    log-sum-exp at lse_dst when a split's is wanted). The half goes through o_smem (a [64, 256] part of a tile
    slot that only this warpgroup read) so that each warp stores whole 512-byte rows in 16-byte vectors: stored
    from the MMA layout, a warp's store covers 8 rows x 16 bytes, and with a division per element the epilogue
    took 5-6 us of a program (H200 probe, thirteenth session)."""
    l_mine.store(l_i)
    _barrier()
    hopper.mbarrier.arrive(mine)
    hopper.mbarrier.wait(theirs, 0)
    l_i = l_i + l_theirs.load(l_i.type.layout)
    inv = gl.convert_layout(gl.where(l_i > 0, 1.0 / gl.where(l_i > 0, l_i, 1.0), 0.0), ROWS_O)  # per row, once
    o_smem.store(gl.where(gl.expand_dims(inv > 0, 1), o * gl.expand_dims(inv, 1), 0.0).to(gl.bfloat16))
    _barrier()
    heads = gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, LD))
    c = w * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(0, LD))
    live = (n_pairs > 0) | (lse_h == 0)  # one split: always (zeros for a padding query); else only a used split
    gl.store(dst + gl.expand_dims(heads * dst_h, 1) + gl.expand_dims(c, 0), o_smem.load(LD),
             mask=gl.expand_dims(heads < gl.where(live, BLOCK_H, 0), 1))
    if w == 1:
        if lse_h > 0:  # natural log: splitk's merge reads it
            m_i = m_smem.load(l_i.type.layout)
            rows = gl.arange(0, BLOCK_H, layout=l_i.type.layout)
            gl.store(lse_dst + rows * lse_h, gl.where(l_i > 0, (m_i + gl.log2(gl.where(l_i > 0, l_i, 1.0))) * LN2,
                                                     float("-inf")), mask=rows < gl.where(live, BLOCK_H, 0))


@gluon.jit
def _mla_ws_kernel(ql_ptr, qp_ptr, kv_ptr, pe_ptr, start_ptr, lens_ptr, rows_ptr, out_ptr, o_ptr, lse_ptr,
                   active_ptr, scale_log2, ql_b, ql_t, ql_h, qp_b, qp_t, qp_h, kv_b, kv_s, pe_b, pe_s, out_b, out_t,
                   out_h, T, H, S, SINGLE: gl.constexpr, HAS_ROWS: gl.constexpr, USE_PDL: gl.constexpr):
    if USE_PDL:  # pdl.py's wait_for_inputs: launched early, wait for the previous kernel, let the next launch
        gl.inline_asm_elementwise("griddepcontrol.wait; // dummy $0", "=r", [], dtype=gl.int32, is_pure=False,
                                  pack=1)
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // dummy $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    hb = gl.program_id(0)  # fastest: the head blocks of one (query, split) run together and share the kv tiles
    sp = gl.program_id(1)
    bt = gl.program_id(2)
    n_splits = gl.num_programs(1)
    b = bt // T
    t = bt % T
    hi = gl.where(t < gl.load(lens_ptr + b), gl.load(start_ptr + b) + t + 1, 0)  # visible slots: [0, hi)
    hi = gl.minimum(hi, S).to(gl.int32)  # past the cache only on an overflow, which the caller refuses
    # split-KV (a batch that does not fill the GPU): whole tile pairs per split, from the row's own length
    span = gl.maximum(gl.cdiv(gl.cdiv(hi, n_splits), 2 * BLOCK_N) * (2 * BLOCK_N), 2 * BLOCK_N)
    s0 = sp * span
    s1 = gl.minimum(s0 + span, hi)
    # a padding query (nothing visible) or a split past the row's end: no tiles (zeros stored, resp. nothing)
    n_pairs = gl.where(s0 < hi, gl.cdiv(s1 - s0, 2 * BLOCK_N), 0)
    if not SINGLE:
        if (sp == 0) & (hb == 0):
            gl.store(active_ptr + bt, gl.cdiv(hi, span).to(gl.int32))

    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, C], gl.bfloat16)
    pe_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, R], gl.bfloat16)
    kv_buf = gl.allocate_shared_memory(gl.bfloat16, [2, BLOCK_N, C], kv_layout)
    pe_buf = gl.allocate_shared_memory(gl.bfloat16, [2, BLOCK_N, R], pe_layout)  # P once the scores are done
    ql_buf = gl.allocate_shared_memory(gl.bfloat16, [1, BLOCK_H, C],
                                       gl.NVMMASharedLayout.get_default_for([BLOCK_H, C], gl.bfloat16))
    qp_buf = gl.allocate_shared_memory(gl.bfloat16, [1, BLOCK_H, R], pe_layout)
    vec: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[0])
    m_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)  # the running row max (log2 domain)
    scale0 = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)  # each warpgroup's rescale this pair
    scale1 = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)
    l0 = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)  # the row sums, at the end
    l1 = gl.allocate_shared_memory(gl.float32, [BLOCK_H], vec)
    # ready: slot 0 value columns 0-255, slot 0 the rest, slot 1 likewise; each completes once per pair
    ready = gl.allocate_shared_memory(gl.int64, [4, 1], hopper.mbarrier.MBarrierLayout())
    # m_ready0, m_ready1, p_ready0, p_ready1, p_free1, l_ready0, l_ready1
    bars = gl.allocate_shared_memory(gl.int64, [7, 1], hopper.mbarrier.MBarrierLayout())
    for i in gl.static_range(4):
        hopper.mbarrier.init(ready.index(i), count=128)  # one arrival per thread of the loading warpgroup
    for i in gl.static_range(7):
        hopper.mbarrier.init(bars.index(i), count=1)
    m_smem.store(gl.full([BLOCK_H], float("-inf"), gl.float32, layout=gl.SliceLayout(1, LD)))
    kb = b.to(gl.int64)  # int64: a batch of long caches passes 2^31 elements
    if HAS_ROWS:  # batch row b reads cache row rows[b] (packed prompt tokens, each its own batch row)
        kb = gl.load(rows_ptr + b).to(gl.int64)
    kv_row = kv_ptr + kb * kv_b
    pe_row = pe_ptr + kb * pe_b
    if n_pairs > 0:  # the query and the first two tiles (this warpgroup's threads arrive for all four parts)
        ql_row = ql_ptr + b * ql_b + t * ql_t
        qp_row = qp_ptr + b * qp_b + t * qp_t
        _load_rows(ql_buf.index(0).slice(0, HALF, dim=1), ql_row, ql_h, hb * BLOCK_H, H, 0, HALF, LD)
        _load_rows(ql_buf.index(0).slice(HALF, HALF, dim=1), ql_row, ql_h, hb * BLOCK_H, H, HALF, HALF, LD)
        _load_rows(qp_buf.index(0), qp_row, qp_h, hb * BLOCK_H, H, 0, R, LD_PE)
        for i in gl.static_range(2):
            _load_rows(kv_buf.index(i).slice(0, HALF, dim=1), kv_row, kv_s, s0 + i * BLOCK_N, s1, 0, HALF, LD)
            async_copy.mbarrier_arrive(ready.index(2 * i), increment_count=False)
        for i in gl.static_range(2):
            _load_rows(kv_buf.index(i).slice(HALF, HALF, dim=1), kv_row, kv_s, s0 + i * BLOCK_N, s1, HALF, HALF,
                       LD)
            _load_rows(pe_buf.index(i), pe_row, pe_s, s0 + i * BLOCK_N, s1, 0, R, LD_PE)
            async_copy.mbarrier_arrive(ready.index(2 * i + 1), increment_count=False)
    _barrier()
    if SINGLE:  # where this program's [64 heads, 512] output goes: its rows, or its split's partial rows
        dst = out_ptr + b * out_b + t * out_t + hb * BLOCK_H * out_h
        dst_h = out_h
        lse_dst = lse_ptr
        lse_h = 0
    else:
        row0 = (bt * H + hb * BLOCK_H) * n_splits + sp
        dst = o_ptr + row0.to(gl.int64) * C
        dst_h = n_splits * C
        lse_dst = lse_ptr + row0
        lse_h = n_splits
    args = (ql_buf, qp_buf, kv_buf, pe_buf, ready, m_smem, scale0, scale1, l0, l1, bars, kv_row, pe_row, kv_s, pe_s,
            s0, s1, n_pairs, scale_log2, dst, dst_h, lse_dst, lse_h)
    # 256 + 248 registers; WG0 spills 72 bytes of loop invariants since the staged epilogue (sm90_aot.py), which
    # measured no slower at B = 64 / 128 (thirteenth session)
    gl.warp_specialize([(_wg0, args), (_wg1, args)], [4], [248])

