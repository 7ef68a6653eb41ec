"""The dense decoder every zoo text model shares (Qwen2, Qwen3, Qwen3-VL's language model).

Pre-norm RMSNorm blocks: attention (GQA, optional q/k RMSNorm and q/k/v bias) and a SwiGLU MLP. What differs
between families is only the config and the positions: `DecoderModel` takes a rotary module that turns
positions into cos/sin (1-D RoPE with optional YaRN, or Qwen3-VL's interleaved M-RoPE).
"""
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ConfigError
from .layers import RMSNorm, activation, apply_rotary, attention
from .rope import DynamicRope, LongRope, ScaledRope, YarnConfig, parse_rope


@dataclass
class DecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    hidden_act: str = "silu"
    qkv_bias: bool = False   # Qwen2: True
    o_bias: bool = False
    qk_norm: bool = True     # Qwen3: per-head RMSNorm of q and k before RoPE; Qwen2: none
    yarn: YarnConfig | ScaledRope | DynamicRope | LongRope | None = None  # RoPE scaling (see zoo_ref.rope)
    sliding_window: int | None = None  # keys a "sliding_attention" layer sees: the last `sliding_window` slots
    layer_types: tuple[str, ...] | None = None  # per layer "full_attention" / "sliding_attention" (None: all full)
    tie_word_embeddings: bool = False
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None


def decoder_config_dict(c: DecoderConfig, model_type: str, architecture: str) -> dict:
    """A transformers config.json dict for a DecoderConfig (5.x rope_parameters; 4.57 reads rope_theta too)."""
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if isinstance(c.yarn, DynamicRope):
        rope.update(rope_type="dynamic", factor=c.yarn.factor)
    elif isinstance(c.yarn, LongRope):
        rope.update(rope_type="longrope", short_factor=list(c.yarn.short_factor), long_factor=list(c.yarn.long_factor),
                    original_max_position_embeddings=c.yarn.original_max_position_embeddings,
                    attention_factor=c.yarn.attention_factor)
    elif isinstance(c.yarn, ScaledRope):
        s = c.yarn
        rope.update(rope_type=s.rope_type, factor=s.factor)
        if s.rope_type == "llama3":
            rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                        original_max_position_embeddings=s.original_max_position_embeddings)
    elif c.yarn is not None:
        y = c.yarn
        rope.update(rope_type="yarn", factor=y.factor,
                    original_max_position_embeddings=y.original_max_position_embeddings, beta_fast=y.beta_fast,
                    beta_slow=y.beta_slow, truncate=y.truncate,
                    **{k: getattr(y, k) for k in ("mscale", "mscale_all_dim", "attention_factor")
                       if getattr(y, k) is not None})
    d = {"model_type": model_type, "architectures": [architecture], "vocab_size": c.vocab_size,
         "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
         "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
         "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim, "rms_norm_eps": c.rms_norm_eps,
         "max_position_embeddings": c.max_position_embeddings, "hidden_act": c.hidden_act,
         "tie_word_embeddings": c.tie_word_embeddings, "rope_parameters": rope, "rope_theta": c.rope_theta,
         "rope_scaling": rope if c.yarn is not None else None, "use_sliding_window": c.sliding_window is not None,
         "sliding_window": c.sliding_window, "layer_types": list(layer_types(c)),
         "eos_token_id": c.eos_token_id[0] if len(c.eos_token_id) == 1 else c.eos_token_id,
         "pad_token_id": c.pad_token_id}
    return d


def require(d: dict, keys, where: str):
    missing = [k for k in keys if d.get(k) is None]
    if missing:
        raise ConfigError(f"{where} is missing required field(s): {', '.join(missing)}")


def decoder_fields(d: dict, where: str, *, head_dim=None, qkv_bias=None, qk_norm=True,
                   rope_types=("default", "yarn", "linear", "llama3", "dynamic", "longrope")):
    """The DecoderConfig fields of a transformers text config dict (4.57 and 5.x spellings).
    head_dim: the family's default when the dict has none (else hidden_size / num_attention_heads);
    qkv_bias: fixed by the family (Qwen2: True) or None to read attention_bias."""
    require(d, ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"], where)
    theta, yarn, _ = parse_rope(d, supported=rope_types)
    heads = d["num_attention_heads"]
    kv_heads = d.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ConfigError(f"{where}: num_attention_heads {heads} must be a multiple of num_key_value_heads {kv_heads}")
    bias = bool(d.get("attention_bias", False))
    eos = d.get("eos_token_id")
    return dict(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=d.get("head_dim") or head_dim or d["hidden_size"] // heads, rope_theta=theta,
        rms_norm_eps=d.get("rms_norm_eps", 1e-6), max_position_embeddings=d.get("max_position_embeddings", 32768),
        hidden_act=d.get("hidden_act", "silu"), qkv_bias=bias if qkv_bias is None else qkv_bias,
        o_bias=bias if qkv_bias is None else False, qk_norm=qk_norm, yarn=yarn,
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)), **sliding_fields(d, where),
        eos_token_id=[] if eos is None else list(eos) if isinstance(eos, list) else [eos],
        pad_token_id=d.get("pad_token_id"))


def sliding_fields(d: dict, where: str) -> dict:
    """transformers' Qwen2/Qwen3 rule: with use_sliding_window, layers from max_window_layers on (or those
    layer_types names "sliding_attention") see only the last sliding_window slots."""
    n = d["num_hidden_layers"]
    window = d.get("sliding_window") if d.get("use_sliding_window") else None
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConfigError(f"{where}: sliding_window must be an int >= 1, got {window!r}")
    types = d.get("layer_types") or [
        "sliding_attention" if window is not None and i >= d.get("max_window_layers", 28) else "full_attention"
        for i in range(n)]
    if len(types) != n or not set(types) <= {"full_attention", "sliding_attention"}:
        raise ConfigError(f"{where}: layer_types must list 'full_attention' / 'sliding_attention' for each of the "
                          f"{n} layers, got {types!r}")
    return {"sliding_window": window, "layer_types": tuple(types)}


def layer_types(c: DecoderConfig) -> tuple:
    """Each layer's attention: "sliding_attention" only where a window is configured."""
    types = c.layer_types or ("full_attention",) * c.num_hidden_layers
    return tuple(t if c.sliding_window is not None else "full_attention" for t in types)


def sliding_mask(mask, query_slots, window: int):
    """mask [B, 1, T, S] limited to the last `window` slots of each query: key j with j > slot - window."""
    j = torch.arange(mask.shape[-1], device=mask.device)
    return mask & (j[None, :] > query_slots[:, None] - window)[None, None]


def causal_mask(key_valid, query_slots):
    """key_valid: bool [B, S]; query_slots: [T] cache slot of each query -> bool [B, 1, T, S].
    A query sees the valid keys up to its own slot; a padding query (its own slot not valid) sees nothing."""
    s = key_valid.shape[1]
    causal = torch.arange(s, device=key_valid.device)[None, :] <= query_slots[:, None]  # [T, S]
    query_valid = key_valid[:, query_slots]  # [B, T]
    return key_valid[:, None, None, :] & causal[None, None] & query_valid[:, None, :, None]


def token_window(valid):
    """valid: bool [B, S], each row one run of True (left or right padding around it) -> (start, end) [B]:
    row b's tokens fill slots [start[b], end[b])."""
    slots = torch.arange(valid.shape[1], device=valid.device)
    start = torch.where(valid, slots, valid.shape[1]).amin(-1)
    return start, torch.where(valid, slots + 1, 0).amax(-1)


def window_mask(key_start, key_end, query_slots, size: int):
    """causal_mask of rows given by their windows (token_window): bool [B, 1, T, size].
    key_start/key_end: [B]; query_slots: [T]. Equal to causal_mask(valid, query_slots) for valid's windows."""
    start, end = key_start[:, None, None], key_end[:, None, None]       # [B, 1, 1]
    q = query_slots[None, :, None]                                      # [1, T, 1]
    j = torch.arange(size, device=query_slots.device)[None, None, :]    # [1, 1, S]
    return ((j >= start) & (j <= q) & (q >= start) & (q < end))[:, None]


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


def new_caches(c: DecoderConfig, batch, max_len, dtype, device=None):
    return [KVCache(batch, c.num_key_value_heads, max_len, c.head_dim, dtype, device)
            for _ in range(c.num_hidden_layers)]


class Attention(nn.Module):
    packed_groups = (("q_proj", "k_proj", "v_proj"),)  # linears of one input, run as one mm by zoo.compile

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=c.o_bias)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
        self.qk_norm = c.qk_norm

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        """x: [B, T, hidden]; cos/sin: [B, T, 1, D]; mask: bool [B, 1, T, S]; S = T, or max_len with a cache."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is not None:
            k, v = cache.update(cache_pos, k, v)
        out = attention(q, k, v, mask, self.head_dim ** -0.5)  # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    packed_groups = (("gate_proj", "up_proj"),)

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.act = activation(c.hidden_act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """embed_tokens, layers, norm (the checkpoint's `model.` / `model.language_model.` keys) + a rotary module."""

    def __init__(self, c: DecoderConfig, rotary: nn.Module):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary_emb = rotary
        self.layer_types = layer_types(c)
        self.windows = tuple(c.sliding_window if t == "sliding_attention" else 0 for t in self.layer_types)

    def forward(self, x, positions, mask, deepstack=(), caches=None, cache_pos=None, layer_fn=None, norm=True,
                rope=None):
        """x: [B, T, hidden] embeddings; positions: what the rotary module takes ([B, T], or [3, B, T] for
        M-RoPE); mask: bool [B, 1, T, S]; deepstack: per level [B, T, hidden] added after layers 0, 1, ...
        (Qwen3-VL's visual features; empty for text models). Returns the final-norm hidden states (norm=False:
        the states before it; zoo.compile runs the norm where the lm_head runs).
        layer_fn: how one layer runs (default `run_layer` below; zoo.compile passes its compiled region, which
        takes `mask` in a form of its own: what it builds the mask from). rope: (cos, sin) at these positions when
        already computed (zoo.compile's decode step computes them in a graph with the embeddings)."""
        cos, sin = rope if rope is not None else self.rotary_emb(positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = (layer_fn or run_layer)(layer, x, cos, sin, mask, None if caches is None else caches[i], cache_pos,
                                        self.windows[i])
            if i < len(deepstack):
                x = x + deepstack[i]
        return self.norm(x) if norm else x


def run_layer(layer: DecoderLayer, x, cos, sin, mask, cache, cache_pos, window: int):
    """One decoder layer; a sliding layer (window > 0) sees only each query's last `window` slots of the mask."""
    if window:
        slots = cache_pos if cache_pos is not None else torch.arange(x.shape[1], device=x.device)
        mask = sliding_mask(mask, slots, window)
    return layer(x, cos, sin, mask, cache, cache_pos)
