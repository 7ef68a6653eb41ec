"""Absorbed-MLA attention over the latent cache on Hopper in bf16: which calls the Gluon kernel (mla_latent_ws.py,
FlashMLA's warp-specialized schedule) serves, and its launch. mla_latent.py's Triton kernel serves the rest (fp32,
other widths and head counts, other GPUs, the interpreter), and everything with ZOO_MLA_GLUON=0.
"""
import torch

from .gluon_switch import GluonSwitch
from .pdl import pdl_launch
from .splitk import _sms, cdiv, merge_splits_into

try:  # Gluon ships with Triton >= 3.4 (its API moves between releases: SWITCH covers compile errors)
    from .mla_latent_ws import BLOCK_H, BLOCK_N, LOG2E, C, R, _mla_ws_kernel, gluon
except (ImportError, AttributeError):  # pragma: no cover - older Triton: mla_latent.py serves every shape
    gluon = None
    BLOCK_H = BLOCK_N = C = R = None

SWITCH = GluonSwitch("the Gluon MLA decode kernel", "ZOO_MLA_GLUON", "the Triton kernel (mla_latent.py)")


def gluon_fits(q_lat, q_pe, kv, pe) -> bool:
    """Whether mla_latent_gluon serves this call: bf16 at 512 + 64 wide, heads a multiple of 64, unit strides
    inside rows, 16-byte aligned rows, on Hopper."""
    if gluon is None or not SWITCH.on(q_lat):
        return False
    h, c = q_lat.shape[2:]
    if c != C.value or q_pe.shape[-1] != R.value or h % BLOCK_H.value or q_lat.dtype != torch.bfloat16:
        return False
    if any(x.dtype != torch.bfloat16 or x.stride(-1) != 1 for x in (q_pe, kv, pe)):
        return False
    # every row starts on a 16-byte cp.async vector
    return not any(x.data_ptr() % 16 or any(st % 8 and n > 1 for st, n in zip(x.stride()[:-1], x.shape[:-1]))
                   for x in (q_lat, q_pe, kv, pe))


def split_count(s: int, programs: int, device) -> int:
    """Splits of the keys: one when the (query, head block) programs fill the GPU (a program holds an SM's shared
    memory), else as many as keep every SM busy in one wave, never shorter than one pair of tiles."""
    return max(1, min(cdiv(s, 2 * BLOCK_N.value), _sms(device) // programs))


def mla_latent_gluon(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, n_splits=None, kv_rows=None):
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
    # num_warps: the first warpgroup (the kernel's warp_specialize adds the second)
    _mla_ws_kernel[(h // BLOCK_H.value, n_splits, b * t)](
        q_lat, q_pe, kv, pe, start_pos, seq_lens, start_pos if kv_rows is None else kv_rows.contiguous(), out, o,
        lse, active, scale * LOG2E, q_lat.stride(0), q_lat.stride(1), q_lat.stride(2), q_pe.stride(0),
        q_pe.stride(1), q_pe.stride(2), kv.stride(0), kv.stride(1), pe.stride(0), pe.stride(1), out.stride(0),
        out.stride(1), out.stride(2), t, h, kv.shape[1], SINGLE=single, HAS_ROWS=kv_rows is not None, num_warps=4,
        **pdl_launch(q_lat))
    if not single:
        merge_splits_into(out, o, lse, t, active)
    return out
