"""Qwen3-VL text decoder: the shared Qwen3 decoder (zoo_ref.decoder) with interleaved M-RoPE positions."""
import torch
from torch import nn

from ..decoder import DecoderModel
from ..rope import inv_freq
from .config import TextConfig


def mrope_cos_sin(positions, inv_freq, mrope_section, dtype):
    """Interleaved M-RoPE. positions: [3, B, T] (T, H, W rows) -> cos, sin: [B, T, 1, head_dim] in dtype.

    Frequency i uses the H position when i % 3 == 1 (i < 3 * section[1]), W when i % 3 == 2
    (i < 3 * section[2]), T otherwise; then the usual cat(f, f) for rotate_half.
    """
    freqs = positions[..., None].float() * inv_freq  # [3, B, T, D/2]
    idx = torch.arange(inv_freq.shape[0], device=positions.device)
    use_h = (idx % 3 == 1) & (idx < 3 * mrope_section[1])
    use_w = (idx % 3 == 2) & (idx < 3 * mrope_section[2])
    f = torch.where(use_h, freqs[1], torch.where(use_w, freqs[2], freqs[0]))
    emb = torch.cat([f, f], dim=-1)[:, :, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class MRotary(nn.Module):
    """positions [3, B, T] -> cos, sin [B, T, 1, head_dim] (fp32 math)."""

    def __init__(self, c: TextConfig):
        super().__init__()
        self.mrope_section = list(c.mrope_section)
        self.register_buffer("inv_freq", inv_freq(c.head_dim, c.rope_theta), persistent=False)

    def forward(self, positions, dtype):
        return mrope_cos_sin(positions, self.inv_freq, self.mrope_section, dtype)


def TextModel(c: TextConfig) -> DecoderModel:
    """The language model under `model.language_model.` (embed_tokens, layers, norm)."""
    return DecoderModel(c, MRotary(c))
