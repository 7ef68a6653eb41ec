"""DeepSeek MLA's absorbed attention as zoo ops, and the same driven by each row's lengths instead of a mask.

The compiled MLA builds the reference's mask through `zoo::mla_mask(start_pos, seq_lens, T, S)` (exactly zoo_ref's
`attention_mask(token_slots(...))` over the static cache). The attention pass turns zoo_ref's `latent_attention`
into `zoo::mla_latent_attention`; `windows.attend_by_window` then rewrites that over an `mla_mask` into
`zoo::mla_window_attention`, which takes the lengths themselves: no [B, 1, T, S] mask is built, and on CUDA the
Triton kernel (kernels/mla_latent.py) reads only each query's visible slots.
"""
import torch
from torch import Tensor

from zoo_ref.deepseek.mla import attention_mask, latent_attention, token_slots

from .ops import _visible


@torch.library.custom_op("zoo::mla_latent_attention", mutates_args=())
def mla_latent_attention(q_lat: Tensor, q_pe: Tensor, kv: Tensor, pe: Tensor, mask: Tensor, scale: float) -> Tensor:
    """zoo_ref.deepseek.latent_attention under any mask. Fully masked queries give zeros; slots no query sees are
    zeroed first (see ops._visible), so a stale NaN there is never read."""
    kv, pe = (_visible(x[:, None], mask)[:, 0] for x in (kv, pe))
    return latent_attention(q_lat, q_pe, kv, pe, mask, scale).contiguous()


@mla_latent_attention.register_fake
def _(q_lat, q_pe, kv, pe, mask, scale):
    return q_lat.new_empty(q_lat.shape)


@torch.library.custom_op("zoo::mla_mask", mutates_args=())
def mla_mask(start_pos: Tensor, seq_lens: Tensor, t: int, size: int) -> Tensor:
    """zoo_ref's MLA mask over `size` cache slots: query t of row b (slot start_pos[b] + t) sees slots 0 .. its own
    when t < seq_lens[b], else nothing. bool [B, 1, t, size]."""
    return _mla_mask(start_pos, seq_lens, t, size)


def _mla_mask(start_pos, seq_lens, t, size):
    return attention_mask(*token_slots(start_pos, seq_lens, t), size)


@mla_mask.register_fake
def _(start_pos, seq_lens, t, size):
    return start_pos.new_empty(start_pos.shape[0], 1, t, size, dtype=torch.bool)


@torch.library.custom_op("zoo::mla_window_attention", mutates_args=())
def mla_window_attention(q_lat: Tensor, q_pe: Tensor, kv: Tensor, pe: Tensor, start_pos: Tensor, seq_lens: Tensor,
                         scale: float) -> Tensor:
    """latent_attention(q_lat, q_pe, kv, pe, mla_mask(start_pos, seq_lens, T, S), scale) reading only the slots
    some query sees: q_lat [B, T, H, C], q_pe [B, T, H, R], kv [B, S, C], pe [B, S, R] -> [B, T, H, C]. The CPU body
    is zoo_ref's forward to the letter (slots up to the longest row, one host read)."""
    n = min(kv.shape[1], max(1, int((start_pos + seq_lens).max())))  # lengths past S: the caller raises
    mask = _mla_mask(start_pos, seq_lens, q_lat.shape[1], n)
    return latent_attention(q_lat, q_pe, kv[:, :n], pe[:, :n], mask, scale).contiguous()  # the fake's layout


@mla_window_attention.register_fake
def _(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale):
    return q_lat.new_empty(q_lat.shape)


@mla_window_attention.register_kernel("cuda")
def _mla_window_attention_cuda(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale):
    from .kernels.mla_latent import mla_latent_triton
    from .kernels.mla_latent_gluon import gluon_fits, mla_latent_gluon, turn_off
    q_lat, q_pe, kv, pe = (x if x.stride(-1) == 1 else x.contiguous() for x in (q_lat, q_pe, kv, pe))
    if gluon_fits(q_lat, q_pe, kv, pe):  # bf16 at DeepSeek widths on Hopper: kernels/mla_latent_gluon.py
        from triton.compiler.errors import CompilationError
        try:
            return mla_latent_gluon(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale)
        except CompilationError as error:  # another Triton's Gluon: warned once, the Triton kernel from now on
            turn_off(error)
    return mla_latent_triton(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale)
