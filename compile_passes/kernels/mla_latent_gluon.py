"""Absorbed-MLA attention over the latent cache in Gluon (Hopper): mla_latent.py's math and contract, with a tile
schedule Triton does not produce.

Triton compiles mla_latent.py's loop so that every wgmma is waited for at once and each tile's load is issued one
tile ahead at best (seen with bench/sm90_aot.py). Here the schedule is explicit:
- one program = 64 heads of one query (and one split of its keys), 8 warps: two warpgroups, the scores split by
  keys, the output by value columns; 64-key tiles in two shared-memory slots (cp.async, masked: slots past the
  row's length are never read, they hold zeros);
- per tile j: the scores of tile j are issued right behind the P·V of tile j-1 (back to back on the tensor cores)
  and both are waited for; tile j+1 then starts loading into tile j-1's slot, so it has the softmax of tile j and
  the P·V of tile j to arrive in; P reaches the P·V MMA through shared memory;
- split-KV when the (query, head block) programs do not fill the GPU: whole tiles per split from the row's own
  length (CUDA-graph safe), splits past it exit, splitk's merge folds the splits a query used.
Shared memory: 2 x 72 KB of tiles, 72 KB of query, 8 KB of P (224 KB of the 227 KB a block may have).
Bound: a tile is 8.9 MFLOP of MMAs (~1.2 us of one SM's tensor cores); it costs ~2.8 us here. The schedules tried
on an H200 (bench/RESULTS.md, ninth session): the softmax overlapping the previous P·V with the next tile's load
exposed (the eighth session's kernel: B = 128 / history 4096 403 us), synchronous MMAs with the next tile loading
during all of this one (375 us), this one (350-356 us; the Triton kernel 540). Left on the table: FlashMLA's split of
the two warpgroups (one tile's scores while the other tile's P·V, each warpgroup owning whole rows of its tile).
Used for every bf16 call at DeepSeek's widths (512 + 64, heads a multiple of 64) on Hopper; ZOO_MLA_GLUON=0 turns it
off (mla_latent.py serves everything then).
"""
import os
import warnings

import torch
import triton.language as tl

from .pdl import capability, pdl_launch
from .splitk import _sms, cdiv, merge_splits_into

try:  # Gluon ships with Triton >= 3.4
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia import hopper
    from triton.experimental.gluon.language.nvidia.ampere import async_copy
    # names that moved between Triton releases: cp.async into shared memory (async_copy_global_to_shared up to
    # 3.6, async_load later) and the block-wide barrier (thread_barrier, later barrier)
    _cp_async = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
    _barrier = getattr(gl, "thread_barrier", None) or gl.barrier
except ImportError:  # pragma: no cover - older Triton: mla_latent.py serves every shape
    gluon = None

LOG2E, LN2 = 1.4426950408889634, tl.constexpr(0.6931471805599453)
# heads per program, keys per tile, latent and rope widths (constexpr: the kernels read them as globals)
BLOCK_H, BLOCK_N, C, R = tl.constexpr(64), tl.constexpr(64), tl.constexpr(512), tl.constexpr(64)

if gluon is not None:
    @gluon.jit
    def _load_tile(kv_row, pe_row, kv_s, pe_s, kv_buf, pe_buf, s0, i, s1, ld_kv: gl.constexpr, ld_pe: gl.constexpr):
        """cp.async of the split's tile i, kv / pe slots [s0 + 64 i, s0 + 64 i + 64) below s1, into slot i % 2
        (zeros past s1)."""
        rows = s0 + i * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, ld_kv))
        cols = gl.arange(0, C, layout=gl.SliceLayout(0, ld_kv))
        ok = gl.expand_dims(rows < s1, 1) & gl.expand_dims(cols < C, 0)
        _cp_async(
            kv_buf.index(i % 2), kv_row + gl.expand_dims(rows, 1) * kv_s + gl.expand_dims(cols, 0), mask=ok)
        rows = s0 + i * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, ld_pe))
        cols = gl.arange(0, R, layout=gl.SliceLayout(0, ld_pe))
        ok = gl.expand_dims(rows < s1, 1) & gl.expand_dims(cols < R, 0)
        _cp_async(
            pe_buf.index(i % 2), pe_row + gl.expand_dims(rows, 1) * pe_s + gl.expand_dims(cols, 0), mask=ok)
        async_copy.commit_group()

    @gluon.jit
    def _softmax_step(s, keys, n0, s1, m_i, l_acc, scale_log2):
        """The scores of the tile starting at slot n0 (keys below s1) -> (P relative to the new running max, that
        max, the rescale factor, the row sums so far, kept per column until the end). A row that saw no key keeps
        -inf as its max and zeros as P."""
        s = gl.where(gl.expand_dims(n0 + keys < s1, 0), s * scale_log2, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1))
        base = gl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = gl.exp2(m_i - base)
        p = gl.exp2(s - gl.expand_dims(base, 1))
        return p, m_new, alpha, l_acc * gl.expand_dims(alpha, 1) + p

    @gluon.jit
    def _mla_gluon_kernel(ql_ptr, qp_ptr, kv_ptr, pe_ptr, start_ptr, lens_ptr, out_ptr, o_ptr, lse_ptr, active_ptr,
                          scale_log2, ql_b, ql_t, ql_h, qp_b, qp_t, qp_h, kv_b, kv_s, pe_b, pe_s, out_b, out_t, out_h,
                          T, H, S, SINGLE: gl.constexpr, USE_PDL: gl.constexpr):
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
        # split-KV (a batch that does not fill the GPU): whole tiles per split, from the row's own length
        span = gl.maximum(gl.cdiv(gl.cdiv(hi, n_splits), BLOCK_N) * BLOCK_N, BLOCK_N)
        if not SINGLE:
            if (sp == 0) & (hb == 0):
                gl.store(active_ptr + bt, gl.cdiv(hi, span).to(gl.int32))
            if sp * span >= hi:
                return
        s0 = sp * span
        s1 = gl.minimum(s0 + span, hi)
        n_tiles = gl.maximum(gl.cdiv(s1 - s0, BLOCK_N), 1)
        ld_kv: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [8, 1], [1, 0])  # 16-byte vectors, a warp a row
        ld_pe: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [8, 1], [1, 0])
        mma_s: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                        instr_shape=[16, BLOCK_N // 2, 16])
        mma_o: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                        instr_shape=[16, C // 2, 16])
        kv_buf = gl.allocate_shared_memory(gl.bfloat16, [2, BLOCK_N, C],
                                           gl.NVMMASharedLayout.get_default_for([BLOCK_N, C], gl.bfloat16))
        pe_buf = gl.allocate_shared_memory(gl.bfloat16, [2, BLOCK_N, R],
                                           gl.NVMMASharedLayout.get_default_for([BLOCK_N, R], gl.bfloat16))
        p_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_H, BLOCK_N],
                                           gl.NVMMASharedLayout.get_default_for([BLOCK_H, BLOCK_N], gl.bfloat16))
        kv_row = kv_ptr + b * kv_b
        pe_row = pe_ptr + b * pe_b
        # the query's 64 heads into shared memory (the score MMAs' A operand), in tile 0's cp.async group
        ql_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_H, C],
                                            gl.NVMMASharedLayout.get_default_for([BLOCK_H, C], gl.bfloat16))
        qp_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_H, R],
                                            gl.NVMMASharedLayout.get_default_for([BLOCK_H, R], gl.bfloat16))
        heads = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, ld_kv))
        c = gl.arange(0, C, layout=gl.SliceLayout(0, ld_kv))
        _cp_async(ql_smem, ql_ptr + b * ql_b + t * ql_t + gl.expand_dims(heads, 1) * ql_h + gl.expand_dims(c, 0))
        heads = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, ld_pe))
        r = gl.arange(0, R, layout=gl.SliceLayout(0, ld_pe))
        _cp_async(qp_smem, qp_ptr + b * qp_b + t * qp_t + gl.expand_dims(heads, 1) * qp_h + gl.expand_dims(r, 0))
        _load_tile(kv_row, pe_row, kv_s, pe_s, kv_buf, pe_buf, s0, 0, s1, ld_kv, ld_pe)

        zero_s = gl.zeros([BLOCK_H, BLOCK_N], gl.float32, layout=mma_s)
        keys = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_s))
        m_i = gl.max(zero_s, axis=1) - float("inf")
        l_acc = zero_s
        o = hopper.warpgroup_mma_init(gl.zeros([BLOCK_H, C], gl.float32, layout=mma_o))  # an async accumulator
        for j in range(0, n_tiles):
            async_copy.wait_group(0)  # tile j has landed
            hopper.fence_async_shared()
            _barrier()
            s_tok = hopper.warpgroup_mma(ql_smem, kv_buf.index(j % 2).permute((1, 0)), zero_s, use_acc=False,
                                         is_async=True)  # issued right behind the P·V of tile j - 1
            s_tok = hopper.warpgroup_mma(qp_smem, pe_buf.index(j % 2).permute((1, 0)), s_tok, is_async=True)
            o, s = hopper.warpgroup_mma_wait(0, deps=(o, s_tok))  # P·V of tile j - 1 and the scores of tile j
            _barrier()  # both warpgroups are done with P and with tile j - 1's slot
            _load_tile(kv_row, pe_row, kv_s, pe_s, kv_buf, pe_buf, s0, j + 1, s1, ld_kv, ld_pe)
            p, m_i, alpha, l_acc = _softmax_step(s, keys, s0 + j * BLOCK_N, s1, m_i, l_acc, scale_log2)
            o = o * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, mma_o)), 1)
            p_smem.store(p.to(gl.bfloat16))
            hopper.fence_async_shared()
            _barrier()
            o = hopper.warpgroup_mma(p_smem, kv_buf.index(j % 2), o, is_async=True)
        o = hopper.warpgroup_mma_wait(0, deps=(o, ))
        async_copy.wait_group(0)

        l_i = gl.convert_layout(gl.sum(l_acc, axis=1), gl.SliceLayout(1, mma_o))
        o = gl.where(gl.expand_dims(l_i > 0, 1), o / gl.expand_dims(gl.where(l_i > 0, l_i, 1.0), 1), 0.0)
        heads = hb * BLOCK_H + gl.arange(0, BLOCK_H, layout=gl.SliceLayout(1, mma_o))
        c = gl.arange(0, C, layout=gl.SliceLayout(0, mma_o))
        if SINGLE:
            gl.store(out_ptr + b * out_b + t * out_t + gl.expand_dims(heads, 1) * out_h + gl.expand_dims(c, 0),
                     o.to(gl.bfloat16))
        else:  # this split's normalized output and log-sum-exp (natural log: splitk's merge reads it)
            row = (bt * H + heads) * n_splits + sp
            gl.store(o_ptr + gl.expand_dims(row, 1) * C + gl.expand_dims(c, 0), o.to(gl.bfloat16))
            m_i = gl.convert_layout(m_i, gl.SliceLayout(1, mma_o))
            gl.store(lse_ptr + row, gl.where(l_i > 0, (m_i + gl.log2(gl.where(l_i > 0, l_i, 1.0))) * LN2,
                                             float("-inf")))


_failed = []  # the compile error that turned this kernel off in this process, if any


def turn_off(error: Exception):
    """This Triton's Gluon does not compile the kernel (its API moves between releases): say so once and let
    mla_latent.py serve every shape."""
    if not _failed:
        warnings.warn(f"zoo: the Gluon MLA decode kernel does not compile with Triton here ({type(error).__name__}: "
                      f"{str(error).splitlines()[0][:200]}); the Triton kernel (mla_latent.py) runs instead")
    _failed.append(error)


def gluon_fits(q_lat, q_pe, kv, pe) -> bool:
    """Whether mla_latent_gluon serves this call: bf16 at 512 + 64 wide, heads a multiple of 64, unit strides
    inside rows, 16-byte aligned rows, on Hopper."""
    if gluon is None or _failed or not q_lat.is_cuda or os.environ.get("ZOO_MLA_GLUON", "1") == "0" \
            or os.environ.get("TRITON_INTERPRET", "0") == "1":  # the interpreter runs no Gluon
        return False
    h, c = q_lat.shape[2:]
    if c != C.value or q_pe.shape[-1] != R.value or h % BLOCK_H.value or q_lat.dtype != torch.bfloat16:
        return False
    if any(x.dtype != torch.bfloat16 or x.stride(-1) != 1 for x in (q_pe, kv, pe)):
        return False
    if any(x.data_ptr() % 16 or any(st % 8 and n > 1 for st, n in zip(x.stride()[:-1], x.shape[:-1]))
           for x in (q_lat, q_pe, kv, pe)):  # every row starts on a 16-byte cp.async vector
        return False
    return capability(q_lat)[0] == 9  # wgmma: sm90 only


def split_count(s: int, programs: int, device) -> int:
    """Splits of the keys: one when the (query, head block) programs fill the GPU (a program holds an SM's shared
    memory), else as many as keep every SM busy in one wave, never shorter than one tile."""
    return max(1, min(cdiv(s, BLOCK_N.value), _sms(device) // programs))


def mla_latent_gluon(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, n_splits=None):
    """mla_latent_triton's contract for the calls gluon_fits accepts (prefill and decode)."""
    b, t, h, c = q_lat.shape
    start_pos, seq_lens = start_pos.contiguous(), seq_lens.contiguous()
    out = torch.empty(q_lat.shape, dtype=q_lat.dtype, device=q_lat.device)
    n_splits = n_splits or split_count(kv.shape[1], b * t * (h // BLOCK_H.value), q_lat.device)
    single = n_splits == 1
    o = lse = active = out  # unused with one split
    if not single:  # partial outputs in bf16 (half the merge's bytes), as mla_latent.py
        o = torch.empty(b * t, h, n_splits, c, dtype=q_lat.dtype, device=q_lat.device)
        lse = torch.empty(b * t, h, n_splits, dtype=torch.float32, device=q_lat.device)
        active = torch.empty(b * t, dtype=torch.int32, device=q_lat.device)
    _mla_gluon_kernel[(h // BLOCK_H.value, n_splits, b * t)](
        q_lat, q_pe, kv, pe, start_pos, seq_lens, out, o, lse, active, scale * LOG2E, q_lat.stride(0),
        q_lat.stride(1), q_lat.stride(2), q_pe.stride(0), q_pe.stride(1), q_pe.stride(2), kv.stride(0),
        kv.stride(1), pe.stride(0), pe.stride(1), out.stride(0), out.stride(1), out.stride(2), t, h, kv.shape[1],
        SINGLE=single, num_warps=8, **pdl_launch(q_lat))
    if not single:
        merge_splits_into(out, o, lse, t, active)
    return out
