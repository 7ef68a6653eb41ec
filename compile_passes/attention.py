"""Attention pass: zoo_ref's softmax attention -> fused kernels.

- `zoo_ref.layers.attention` (text GQA over the static cache, vision per-image/frame blocks, MLA naive 192/128)
  -> zoo::attention (SDPA's fused kernels; stale slots zeroed first). Over a structure mask (a token window, a
  prompt, vision segments) windows.attend_by_window swaps it for the op that takes the structure itself.
- `zoo_ref.deepseek.latent_attention` (absorbed MLA, one 576/512 kv head for all query heads)
  -> zoo::mla_latent_attention; over the compiled MLA's `zoo::mla_mask`, windows.attend_by_window makes it
  zoo::mla_window_attention (a FlashMLA-style Triton kernel on CUDA, driven by the rows' lengths).
- `zoo_ref.decoder.sliding_mask` (a sliding-window layer's limit on that mask) -> zoo::sliding_mask, which
  windows.attend_by_window folds into the window / prompt attention as its `window` argument.
- `zoo_ref.deepseek.absorb_values` (absorbed MLA's W_UV) and the reshape o_proj reads it through
  -> zoo::mla_absorb_values, one strided-batched GEMM that writes that layout itself.
"""
import torch

from zoo_ref.decoder import sliding_mask
from zoo_ref.deepseek.mla import absorb_values, latent_attention
from zoo_ref.layers import attention

from . import latent, ops, windows  # noqa: F401  (registers torch.ops.zoo.*)
from .patterns import Replacement


def _search_attention(q, k, v, mask, scale):
    return attention(q, k, v, mask, scale)


def _replace_attention(q, k, v, mask, scale):
    return torch.ops.zoo.attention(q, k, v, mask, scale)


def _search_latent(q_lat, q_pe, kv, pe, mask, scale):
    return latent_attention(q_lat, q_pe, kv, pe, mask, scale)


def _replace_latent(q_lat, q_pe, kv, pe, mask, scale):
    return torch.ops.zoo.mla_latent_attention(q_lat, q_pe, kv, pe, mask, scale)


def _search_absorb(o_lat, w_uv):  # zoo_ref's attend (W_UV absorbed), then output's reshape for o_proj
    return absorb_values(o_lat, w_uv).reshape(o_lat.shape[0], o_lat.shape[1], -1)


def _replace_absorb(o_lat, w_uv):
    return torch.ops.zoo.mla_absorb_values(o_lat, w_uv)


def _search_sliding(mask, query_slots, window):
    return sliding_mask(mask, query_slots, window)


def _replace_sliding(mask, query_slots, window):
    return torch.ops.zoo.sliding_mask(mask, query_slots, window)


def _shape(match, name):
    return match.kwargs[name].meta["val"].shape


def _attention_shapes_ok(match) -> bool:
    """q [B, H, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv], mask [B', 1, T, S], H a multiple of Hkv."""
    q, k, v, m = (_shape(match, n) for n in ("q", "k", "v", "mask"))
    return (len(q) == len(k) == len(v) == len(m) == 4 and q[3] == k[3] and k[2] == v[2] and k[1] == v[1]
            and q[1] % k[1] == 0 and m[-2] == q[2] and m[-1] == k[2])


def _latent_shapes_ok(match) -> bool:
    """q_lat [B, T, H, C], q_pe [B, T, H, R], kv [B, S, C], pe [B, S, R], mask [B, 1, T, S]."""
    ql, qp, kv, pe, m = (_shape(match, n) for n in ("q_lat", "q_pe", "kv", "pe", "mask"))
    return (len(ql) == len(qp) == 4 and len(kv) == len(pe) == 3 and ql[-1] == kv[-1] and qp[-1] == pe[-1]
            and kv[1] == pe[1] and m[-1] == kv[1] and m[-2] == ql[1])


def _absorb_shapes_ok(match) -> bool:
    """o_lat [B, T, H, C], w_uv [H, V, C]."""
    o, w = (_shape(match, n) for n in ("o_lat", "w_uv"))
    return len(o) == 4 and len(w) == 3 and o[2] == w[0] and o[3] == w[2]


class _AlsoContiguous(Replacement):
    """Registers each recorded call-site layout also with its first argument contiguous: eagerly o_lat is
    latent_attention's einsum (a permuted view), in the compiled graph the attention op's output."""

    def register_like(self, args):
        super().register_like(args)
        super().register_like([args[0].new_empty(args[0].shape), *args[1:]])


def attention_replacements():
    return [Replacement("attention", attention, _search_attention, _replace_attention, "scale", 0.2718281,
                        extra_check=_attention_shapes_ok),
            Replacement("attention_mla_latent", latent_attention, _search_latent, _replace_latent, "scale",
                        0.3141592, extra_check=_latent_shapes_ok),
            # a sliding-window layer's mask (Qwen2/Qwen3 sliding_window): the op attend_by_window looks through
            Replacement("attention_sliding", sliding_mask, _search_sliding, _replace_sliding, "window", 104729),
            # absorbed MLA's value projection (W_UV), written in the layout o_proj reads (no permuted copy)
            _AlsoContiguous("absorb_values", absorb_values, _search_absorb, _replace_absorb,
                            extra_check=_absorb_shapes_ok)]
