"""Qwen3-VL text decoder: Qwen3 blocks (q/k RMSNorm, GQA) with interleaved M-RoPE and deepstack injection."""
import torch
from torch import nn

from ..layers import RMSNorm, activation, apply_rotary, attention, inv_freq
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


class KVCache(nn.Module):
    """Static per-layer K/V buffers [B, Hkv, max_len, D], written in place at the given positions."""

    def __init__(self, batch, n_kv_heads, max_len, head_dim, dtype, device=None):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @classmethod
    def over(cls, k, v):
        """A cache over existing buffers (e.g. the first rows of a larger cache)."""
        cache = cls.__new__(cls)
        nn.Module.__init__(cache)
        cache.register_buffer("k", k, persistent=False)
        cache.register_buffer("v", v, persistent=False)
        return cache

    def update(self, pos, k, v):  # pos: [T] long cache slots; k/v: [B, Hkv, T, D] -> full buffers
        self.k.index_copy_(2, pos, k)
        self.v.index_copy_(2, pos, v)
        return self.k, self.v


class TextAttention(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=c.attention_bias)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        """x: [B, T, hidden]; cos/sin: [B, T, 1, D]; mask: bool [B, 1, T, S]; S = T, or max_len with a cache."""
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv, self.head_dim))
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim)
        q, k = apply_rotary(q, k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is not None:
            k, v = cache.update(cache_pos, k, v)
        out = attention(q, k, v, mask, self.head_dim ** -0.5)  # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class TextMLP(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.act = activation(c.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.self_attn = TextAttention(c)
        self.mlp = TextMLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    def __init__(self, c: TextConfig):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.register_buffer("inv_freq", inv_freq(c.head_dim, c.rope_theta), persistent=False)

    def forward(self, x, positions, mask, deepstack=(), caches=None, cache_pos=None):
        """x: [B, T, hidden] embeddings; positions: [3, B, T]; mask: bool [B, 1, T, S];
        deepstack: per level [B, T, hidden], zero outside visual positions, added after layers 0, 1, ...."""
        cos, sin = mrope_cos_sin(positions, self.inv_freq, self.c.mrope_section, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if caches is None else caches[i], cache_pos)
            if i < len(deepstack):
                x = x + deepstack[i]
        return self.norm(x)
