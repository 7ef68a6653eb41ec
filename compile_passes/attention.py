"""Attention pass: zoo_ref's softmax attention -> fused kernels.

- `zoo_ref.layers.attention` (text GQA over the static cache with per-row masks, vision per-image/frame
  blocks, MLA naive 192/128) -> aten.scaled_dot_product_attention, which Inductor lowers to the fused
  flash / memory-efficient kernels (CPU: its flash kernel).
- `zoo_ref.deepseek.latent_attention` (absorbed MLA, one 576/512 kv head for all query heads)
  -> zoo::mla_latent_attention (Triton split-K decode kernel on CUDA).
"""
import torch

import zoo.ops  # noqa: F401  (registers torch.ops.zoo.*)
from zoo_ref.deepseek.mla import latent_attention
from zoo_ref.layers import attention

from .patterns import Replacement


def _search_attention(q, k, v, mask, scale):
    return attention(q, k, v, mask, scale)


def _replace_attention(q, k, v, mask, scale):
    # GQA: repeat kv heads so the masked memory-efficient kernel applies (flash takes no mask).
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    return torch.ops.aten.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _search_latent(q_lat, q_pe, kv, pe, mask, scale):
    return latent_attention(q_lat, q_pe, kv, pe, mask, scale)


def _replace_latent(q_lat, q_pe, kv, pe, mask, scale):
    return torch.ops.zoo.mla_latent_attention(q_lat, q_pe, kv, pe, mask, scale)


def attention_replacements():
    return [Replacement("attention", attention, _search_attention, _replace_attention, "scale", 0.2718281),
            Replacement("attention_mla_latent", latent_attention, _search_latent, _replace_latent, "scale",
                        0.3141592)]
