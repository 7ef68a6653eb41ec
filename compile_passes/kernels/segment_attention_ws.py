"""Attention over equal segments at head dim 64 in Gluon, warp-specialized (the vision encoder's images / frames).

One program = 192 queries (three warpgroups of 64) of one head of one segment, every key of that segment:
- a loader warp brings the queries once and each [128, 64] key and value tile through a ring of STAGES slots
  (TMA over a [segments, L, heads * 64] view: rows past the segment's end arrive as zeros, so nothing of the next
  segment is read, and the output's TMA store clips them);
- each warpgroup runs FlashAttention-3's intra-warpgroup pipeline: it issues tile j's scores (Q @ K_j^T), then
  tile j-1's P @ V (P from registers), waits for the scores only, and does tile j's softmax while the P @ V is on
  the tensor cores;
- the warpgroups issue their MMAs in turn (FlashAttention-3's ping-pong over three, an mbarrier each), so that
  one's softmax runs under the others' MMAs.
Bound (H200, fourteenth session, bench/RESULTS.md): at head dim 64 a score costs 256 MMA FLOPs and one exp2, and
the SFU's 16 exp2 a clock per SM match the tensor cores' 16 scores: both at once or neither at full rate. One
12,544-patch image runs at ~575 TFLOP/s (cuDNN ~495); 4096 patches at ~473 (cuDNN ~467), where 352 programs in
2.7 waves of one program an SM cost the difference. Measured and dropped: P through shared memory with four
warpgroups, exp2 partly on the FMA pipe (a polynomial), 64-key tiles, [64, 64] score halves, 4 stages, separate
key / value barriers, the tail waves split over the keys (fifteenth session: the merge costs more than the waves
save). Packed exp2 (ex2.approx.bf16x2) does not halve the SFU's work: ptxas makes it two MUFU ops on sm90.
"""
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import tma

_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

LOG2E = 1.4426950408889634
# queries per warpgroup, warpgroups, keys per tile, head dim, key/value slots
BLOCK_M, WGS, BLOCK_N, D, STAGES = (tl.constexpr(64), tl.constexpr(3), tl.constexpr(128), tl.constexpr(64),
                                    tl.constexpr(3))
MMA_S = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 16]))
MMA_O = gl.constexpr(gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16]))
P_OP = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=MMA_O.value, k_width=2))
ROWS_S, ROWS_O = gl.constexpr(gl.SliceLayout(1, MMA_S.value)), gl.constexpr(gl.SliceLayout(1, MMA_O.value))


@gluon.jit
def _loader(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, seg, q0, col, n_tiles):
    hopper.mbarrier.expect(q_bar, WGS * q_desc.block_type.nbytes)
    for w in gl.static_range(WGS):
        _tma_load(q_desc, [seg, q0 + w * BLOCK_M, col], q_bar, q_smem.index(w))
    for j in range(n_tiles):
        st = j % STAGES
        if j >= STAGES:  # every warpgroup is done with the slot's last tile
            hopper.mbarrier.wait(kv_free.index(st), (j // STAGES - 1) & 1)
        hopper.mbarrier.expect(kv_ready.index(st), 2 * k_desc.block_type.nbytes)
        _tma_load(k_desc, [seg, j * BLOCK_N, col], kv_ready.index(st), k_smem.index(st))
        _tma_load(v_desc, [seg, j * BLOCK_N, col], kv_ready.index(st), v_smem.index(st))


@gluon.jit
def _softmax(s, m_i, l_i, j, L, scale_log2):
    """Tile j's raw scores [64, BLOCK_N] -> P (bf16, against the new row max), the rescale of what came before,
    and the new max and sum. Keys past the segment (the last tile only) score -inf."""
    if (j + 1) * BLOCK_N > L:
        keys = j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, MMA_S))
        s = gl.where(gl.expand_dims(keys < L, 0), s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1))  # finite: tile 0 holds a key of the segment
    alpha = gl.exp2((m_i - m_new) * scale_log2)
    p = gl.exp2(s * scale_log2 - gl.expand_dims(m_new * scale_log2, 1))
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p.to(gl.bfloat16), alpha, m_new, l_i


@gluon.jit
def _consumer(w, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, turn, o_desc, seg, q0, col, n_tiles, L,
              scale_log2):
    q = q_smem.index(w).reshape([BLOCK_M, D])  # [64, 64]
    mine = turn.index(w)
    after = turn.index((w + 1) % WGS)
    if q0 + w * BLOCK_M >= L:  # queries past the segment's end: keep the slots' and the turns' cadence only
        for j in range(n_tiles):
            hopper.mbarrier.wait(mine, j & 1)
            hopper.mbarrier.arrive(after)
            hopper.mbarrier.wait(kv_ready.index(j % STAGES), (j // STAGES) & 1)
            hopper.mbarrier.arrive(kv_free.index(j % STAGES))
        hopper.mbarrier.wait(mine, n_tiles & 1)
        hopper.mbarrier.arrive(after)
    else:
        zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=MMA_S)
        hopper.mbarrier.wait(q_bar, 0)
        hopper.mbarrier.wait(kv_ready.index(0), 0)
        hopper.mbarrier.wait(mine, 0)
        s = hopper.warpgroup_mma(q, k_smem.index(0).reshape([BLOCK_N, D]).permute((1, 0)), zero, use_acc=False,
                                 is_async=True)
        hopper.mbarrier.arrive(after)
        s = hopper.warpgroup_mma_wait(0, deps=(s, ))
        p, alpha, m_i, l_i = _softmax(s, gl.full([BLOCK_M], float("-inf"), gl.float32, layout=ROWS_S),
                                      gl.zeros([BLOCK_M], gl.float32, layout=ROWS_S), 0, L, scale_log2)
        o = gl.zeros([BLOCK_M, D], gl.float32, layout=MMA_O)
        for j in range(1, n_tiles):
            st = j % STAGES
            prev = (j - 1) % STAGES
            hopper.mbarrier.wait(kv_ready.index(st), (j // STAGES) & 1)
            hopper.mbarrier.wait(mine, j & 1)  # the warpgroups issue their MMAs in turn: one's softmax under the
            s = hopper.warpgroup_mma(q, k_smem.index(st).reshape([BLOCK_N, D]).permute((1, 0)), zero, use_acc=False,
                                     is_async=True)
            o = hopper.warpgroup_mma(gl.convert_layout(p, P_OP), v_smem.index(prev).reshape([BLOCK_N, D]), o,
                                     is_async=True)
            hopper.mbarrier.arrive(after)  # others' MMAs (FlashAttention-3's ping-pong, over three)
            s = hopper.warpgroup_mma_wait(1, deps=(s, ))  # the scores; P @ V runs on under the softmax
            p, alpha, m_i, l_i = _softmax(s, m_i, l_i, j, L, scale_log2)
            o = hopper.warpgroup_mma_wait(0, deps=(o, ))
            _barrier()  # every warp of this warpgroup is done with slot prev
            hopper.mbarrier.arrive(kv_free.index(prev))
            o = o * gl.expand_dims(gl.convert_layout(alpha, ROWS_O), 1)
        last = (n_tiles - 1) % STAGES
        hopper.mbarrier.wait(mine, n_tiles & 1)
        o = hopper.warpgroup_mma(gl.convert_layout(p, P_OP), v_smem.index(last).reshape([BLOCK_N, D]), o,
                                 is_async=True)
        hopper.mbarrier.arrive(after)
        o = hopper.warpgroup_mma_wait(0, deps=(o, ))
        _barrier()
        hopper.mbarrier.arrive(kv_free.index(last))
        o = o * gl.expand_dims(gl.convert_layout(1.0 / l_i, ROWS_O), 1)
        # the queries' slot is free: the output goes out through it (the TMA store clips rows past the segment)
        q_smem.index(w).reshape([BLOCK_M, D]).store(o.to(gl.bfloat16))
        hopper.fence_async_shared()
        _barrier()
        _tma_store(o_desc, [seg, q0 + w * BLOCK_M, col], q_smem.index(w))
        tma.store_wait(0)


@gluon.jit
def _segment_attention_kernel(q_desc, k_desc, v_desc, o_desc, L, scale_log2):
    qb = gl.program_id(0)
    h = gl.program_id(1)
    seg = gl.program_id(2)
    q0 = qb * (WGS * BLOCK_M)
    col = h * D
    n_tiles = gl.cdiv(L, BLOCK_N)
    q_smem = gl.allocate_shared_memory(gl.bfloat16, [WGS, 1, BLOCK_M, D], q_desc.layout)
    k_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, 1, BLOCK_N, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, 1, BLOCK_N, D], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1, 1], hopper.mbarrier.MBarrierLayout()).index(0)
    kv_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], hopper.mbarrier.MBarrierLayout())
    kv_free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], hopper.mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [WGS, 1], hopper.mbarrier.MBarrierLayout())
    hopper.mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        hopper.mbarrier.init(kv_ready.index(i), count=1)
        hopper.mbarrier.init(kv_free.index(i), count=WGS)
    for i in gl.static_range(WGS):
        hopper.mbarrier.init(turn.index(i), count=1)
    hopper.fence_async_shared()
    hopper.mbarrier.arrive(turn.index(0))  # warpgroup 0 goes first
    # registers: 168 (this warpgroup) + 2 x 160 + 24 (the loader warp's warpgroup); ptxas spills 64 B of loop
    # invariants around the last tile's mask (bench/sm90_aot.py segment_ws)
    gl.warp_specialize([(_consumer, (0, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, turn, o_desc, seg, q0,
                                     col, n_tiles, L, scale_log2)),
                        (_consumer, (1, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, turn, o_desc, seg, q0,
                                     col, n_tiles, L, scale_log2)),
                        (_consumer, (2, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, turn, o_desc, seg, q0,
                                     col, n_tiles, L, scale_log2)),
                        (_loader, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, kv_ready, kv_free, seg,
                                   q0, col, n_tiles))], [4, 4, 1], [160, 160, 24])

