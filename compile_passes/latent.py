"""DeepSeek MLA's absorbed attention as zoo ops, and the same driven by each row's lengths instead of a mask.

The compiled MLA builds the reference's mask through `zoo::mla_mask(start_pos, seq_lens, T, S)` (exactly zoo_ref's
`attention_mask(token_slots(...))` over the static cache). The attention pass turns zoo_ref's `latent_attention`
into `zoo::mla_latent_attention`; `windows.attend_by_window` then rewrites that over an `mla_mask` into
`zoo::mla_window_attention`, which takes the lengths themselves: no [B, 1, T, S] mask is built, and on CUDA the
kernel (kernels/mla_latent_ws.py in bf16 on Hopper, kernels/mla_latent.py otherwise) reads only each query's
visible slots. The absorbed attention's value projection (zoo_ref's `absorb_values`) with the reshape o_proj reads
it through becomes `zoo::mla_absorb_values`, which writes that layout itself.
"""
from typing import Optional

import torch
from torch import Tensor

from zoo_ref.deepseek.mla import absorb_values, attention_mask, latent_attention, token_slots

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
                         scale: float, kv_rows: Optional[Tensor] = None) -> Tensor:
    """latent_attention(q_lat, q_pe, kv, pe, mla_mask(start_pos, seq_lens, T, S), scale) reading only the slots
    some query sees: q_lat [B, T, H, C], q_pe [B, T, H, R], kv [B, S, C], pe [B, S, R] -> [B, T, H, C]. With kv_rows
    [B], the keys of batch row b are cache row kv_rows[b] (the same as kv.index_select(0, kv_rows), gathered by the
    kernel as it reads). The CPU body is zoo_ref's forward to the letter (slots up to the longest row, one host
    read)."""
    if kv_rows is not None:
        kv, pe = kv.index_select(0, kv_rows), pe.index_select(0, kv_rows)
    n = min(kv.shape[1], max(1, int((start_pos + seq_lens).max())))  # lengths past S: the caller raises
    mask = _mla_mask(start_pos, seq_lens, q_lat.shape[1], n)
    return latent_attention(q_lat, q_pe, kv[:, :n], pe[:, :n], mask, scale).contiguous()  # the fake's layout


@mla_window_attention.register_fake
def _(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, kv_rows=None):
    return q_lat.new_empty(q_lat.shape)


@mla_window_attention.register_kernel("cuda")
def _mla_window_attention_cuda(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, kv_rows=None):
    from .kernels.mla_latent import mla_latent_triton
    from .kernels.mla_latent_gluon import SWITCH, gluon_fits, mla_latent_gluon
    q_lat, q_pe, kv, pe = (x if x.stride(-1) == 1 else x.contiguous() for x in (q_lat, q_pe, kv, pe))
    if gluon_fits(q_lat, q_pe, kv, pe):  # bf16 at DeepSeek widths on Hopper: kernels/mla_latent_ws.py
        from triton.compiler.errors import CompilationError
        try:
            return mla_latent_gluon(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, kv_rows=kv_rows)
        except CompilationError as error:  # another Triton's Gluon: warned once, the Triton kernel from now on
            SWITCH.turn_off(error)
    return mla_latent_triton(q_lat, q_pe, kv, pe, start_pos, seq_lens, scale, kv_rows=kv_rows)


def _row_gather(x):
    """(cache, rows) when x is the cache's rows gathered along dim 0 (index_select, or the aten.index it becomes),
    else None."""
    if not isinstance(x, torch.fx.Node) or x.op != "call_function":
        return None
    if x.target is torch.ops.aten.index_select.default and x.args[1] == 0:
        return x.args[0], x.args[2]
    if x.target is torch.ops.aten.index.Tensor and len(x.args[1]) == 1:
        return x.args[0], x.args[1][0]
    return None


def fold_row_gathers(node: torch.fx.Node) -> bool:
    """A zoo::mla_window_attention whose kv and pe are their caches' rows gathered by the same rows (the compiled
    MLA's packed prompt: each token a batch row over its own cache row) -> the same op over the caches with
    kv_rows = rows: the kernel reads each row where it lies instead of a gathered [tokens, S, C] copy."""
    kv, pe = _row_gather(node.args[2]), _row_gather(node.args[3])
    if kv is None or pe is None or kv[1] is not pe[1] or len(node.args) > 7:
        return False
    gathers = node.args[2:4]
    node.args = (*node.args[:2], kv[0], pe[0], *node.args[4:7], kv[1])
    for gather in gathers:
        if not gather.users:
            gather.graph.erase_node(gather)
    return True


@torch.library.custom_op("zoo::mla_absorb_values", mutates_args=())
def mla_absorb_values(o_lat: Tensor, w_uv: Tensor) -> Tensor:
    """zoo_ref's absorb_values(o_lat [B, T, H, C], w_uv [H, V, C]) as o_proj reads it: [B, T, H * V], contiguous."""
    return absorb_values(o_lat, w_uv).reshape(*o_lat.shape[:2], -1).contiguous()


@mla_absorb_values.register_fake
def _(o_lat, w_uv):
    return o_lat.new_empty(*o_lat.shape[:2], o_lat.shape[2] * w_uv.shape[1])


@mla_absorb_values.register_kernel("cuda")
def _mla_absorb_values_cuda(o_lat, w_uv):
    # the heads as the batch of one cuBLAS strided-batched GEMM whose output rows are written where o_proj reads
    # them (head h's [B*T, V] at column h*V, leading dimension H*V): the einsum's [H, B*T, V] result would need a
    # permuted copy (a prompt of 704 tokens at R1 widths: 17.5 us on an H200)
    b, t, h, c = o_lat.shape
    v = w_uv.shape[1]
    out = o_lat.new_empty(b, t, h * v)
    torch.bmm(o_lat.reshape(b * t, h, c).transpose(0, 1), w_uv.transpose(1, 2),
              out=out.view(b * t, h, v).transpose(0, 1))
    return out
