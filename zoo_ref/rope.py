"""Rotary position embeddings: inverse frequencies (default, YaRN, linear, llama3, dynamic NTK, LongRoPE) and the
1-D cos/sin tables.

Shared by every model with 1-D positions (Qwen3 / Qwen2 decoders, DeepSeek MLA); Qwen3-VL's M-RoPE builds on
`inv_freq`. Config parsing accepts transformers 4.57 (`rope_theta` + `rope_scaling`) and 5.x (`rope_parameters`)
spellings and follows 5.x semantics (YaRN's original_max_position_embeddings defaults to max_position_embeddings).
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError


class RopeConfigError(ConfigError):
    pass


@dataclass(frozen=True)
class YarnConfig:
    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True)
class ScaledRope:
    """transformers' "linear" (every frequency / factor) and "llama3" (low frequencies / factor, high ones kept, a
    smooth band between) RoPE scaling; both static, cos/sin unscaled."""
    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class DynamicRope:
    """transformers' "dynamic" NTK scaling: once a call reaches past max_position_embeddings, the base grows with the
    call's length L = max(position) + 1: base * (factor * L / max_position_embeddings - (factor - 1)) ** (d / (d - 2)).
    A function of the call here; transformers keeps the largest L seen until a call shorter than
    max_position_embeddings resets it, which gives the same frequencies for every call of a generate (lengths only
    grow) and differs only when a later call is shorter than an earlier one yet still past max_position_embeddings."""
    factor: float
    max_position_embeddings: int


@dataclass(frozen=True)
class LongRope:
    """transformers' "longrope": per-frequency divisors, short_factor while a call stays within
    original_max_position_embeddings (max(position) + 1 <= it), long_factor beyond; cos/sin scaled by
    attention_factor."""
    short_factor: tuple
    long_factor: tuple
    original_max_position_embeddings: int
    attention_factor: float


def same_frequencies_up_to(yarn) -> int | None:
    """The longest call (max position + 1) up to which every call rotates by the same frequencies: dynamic NTK and
    LongRoPE change them with the call's length past their threshold; None when no length changes them."""
    if isinstance(yarn, DynamicRope):
        return yarn.max_position_embeddings
    if isinstance(yarn, LongRope):
        return yarn.original_max_position_embeddings
    return None


def exponents(dim: int, device=None):
    """0, 2, ..., dim - 2 over dim (fp32): the powers of the base that give RoPE's frequencies."""
    return torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim


def inv_freq(dim: int, theta: float):
    return 1.0 / (theta ** exponents(dim))


def parse_rope(d: dict, default_theta: float = 10000.0, supported=("default", "yarn")):
    """A config.json dict -> (rope_theta, YarnConfig or None, the raw rope dict)."""
    rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = rope.get("rope_theta", d.get("rope_theta", default_theta))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in supported:
        raise RopeConfigError(f"unsupported rope_type {rope_type!r} (supported: {', '.join(map(repr, supported))})")
    yarn = None
    if rope_type == "dynamic":
        if rope.get("factor") is None:
            raise RopeConfigError("dynamic rope scaling needs a factor")
        yarn = DynamicRope(float(rope["factor"]), int(d.get("max_position_embeddings") or 32768))
    if rope_type == "longrope":
        yarn = parse_longrope(d, rope)
    if rope_type in ("linear", "llama3"):
        if rope.get("factor") is None:
            raise RopeConfigError(f"{rope_type} rope scaling needs a factor")
        original = rope.get("original_max_position_embeddings") or d.get("max_position_embeddings") or 8192
        yarn = ScaledRope(rope_type, float(rope["factor"]), float(rope.get("low_freq_factor", 1.0)),
                          float(rope.get("high_freq_factor", 4.0)), int(original))
    if rope_type == "yarn":
        max_pos = d.get("max_position_embeddings")
        original = rope.get("original_max_position_embeddings") or max_pos
        if original is None:
            raise RopeConfigError("yarn rope scaling needs original_max_position_embeddings or max_position_embeddings")
        factor = rope.get("factor")
        if factor is None:
            if max_pos is None:
                raise RopeConfigError("yarn rope scaling needs a factor (or max_position_embeddings to derive it)")
            factor = max_pos / original
        yarn = YarnConfig(factor=float(factor), original_max_position_embeddings=int(original),
                          beta_fast=rope.get("beta_fast") or 32, beta_slow=rope.get("beta_slow") or 1,
                          mscale=rope.get("mscale"), mscale_all_dim=rope.get("mscale_all_dim"),
                          attention_factor=rope.get("attention_factor"), truncate=rope.get("truncate", True))
    return float(theta), yarn, rope


def parse_longrope(d: dict, rope: dict) -> LongRope:
    original = rope.get("original_max_position_embeddings") or d.get("original_max_position_embeddings")
    for name in ("short_factor", "long_factor"):
        if not isinstance(rope.get(name), (list, tuple)) or not rope[name]:
            raise RopeConfigError(f"longrope rope scaling needs {name} (a list of per-frequency factors)")
    if not original:
        raise RopeConfigError("longrope rope scaling needs original_max_position_embeddings")
    factor = rope.get("factor") or (d.get("max_position_embeddings") or 32768) / original
    attention = rope.get("attention_factor")
    if attention is None:  # the LongRoPE paper's default, as transformers computes it
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return LongRope(tuple(map(float, rope["short_factor"])), tuple(map(float, rope["long_factor"])), int(original),
                    float(attention))


def yarn_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(dim: int, base: float, yarn: YarnConfig | None):
    """-> (inv_freq [dim / 2] fp32, attention_factor that scales cos/sin). yarn: a YarnConfig, a ScaledRope or None."""
    pos_freqs = base ** exponents(dim)
    if yarn is None:
        return 1.0 / pos_freqs, 1.0
    if isinstance(yarn, ScaledRope):
        return scaled_inv_freq(1.0 / pos_freqs, yarn), 1.0
    y = yarn

    def correction_dim(rotations):  # the dim whose wavelength fits `rotations` times in the original context
        return dim * math.log(y.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(y.beta_fast), correction_dim(y.beta_slow)
    if y.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolate = 1 - ramp  # 1 = keep the original frequency, 0 = divide it by factor
    freq = (1.0 / (y.factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    if y.attention_factor is not None:
        attention_factor = y.attention_factor
    elif y.mscale and y.mscale_all_dim:
        attention_factor = yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
    else:
        attention_factor = yarn_mscale(y.factor)
    return freq, float(attention_factor)


def scaled_inv_freq(freq, s: ScaledRope):
    if s.rope_type == "linear":
        return freq / s.factor
    wavelen = 2 * math.pi / freq  # llama3: by wavelength against the original context
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, freq / s.factor, freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor
                                                                                  - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary(nn.Module):
    """1-D RoPE tables. positions [B, T] -> cos, sin [B, T, 1, dim] in `dtype` (computed in fp32). Dynamic NTK and
    LongRoPE pick their frequencies from the call's length, max(position) + 1, on the device (no host read)."""

    def __init__(self, dim: int, theta: float, yarn: YarnConfig | ScaledRope | DynamicRope | LongRope | None = None):
        super().__init__()
        self.dim, self.theta, self.scaling = dim, theta, yarn
        if isinstance(yarn, LongRope):
            for name in ("short_factor", "long_factor"):
                if len(getattr(yarn, name)) != dim // 2:
                    raise RopeConfigError(f"longrope {name} must have head_dim / 2 = {dim // 2} entries, got "
                                          f"{len(getattr(yarn, name))}")
            base = theta ** exponents(dim)
            freq, self.attention_factor = 1.0 / (torch.tensor(yarn.short_factor) * base), yarn.attention_factor
            self.register_buffer("long_inv_freq", 1.0 / (torch.tensor(yarn.long_factor) * base), persistent=False)
        else:
            freq, self.attention_factor = rope_inv_freq(dim, theta, None if isinstance(yarn, DynamicRope) else yarn)
        self.register_buffer("inv_freq", freq, persistent=False)

    def frequencies(self, positions):
        """inv_freq [dim / 2] fp32 for a call at these positions."""
        s = self.scaling
        if not isinstance(s, (DynamicRope, LongRope)):
            return self.inv_freq
        length = positions.max() + 1
        if isinstance(s, LongRope):
            return torch.where(length > s.original_max_position_embeddings, self.long_inv_freq, self.inv_freq)
        # transformers' arithmetic, op for op: the same fp32 rounding
        grown = length.clamp(min=s.max_position_embeddings)  # (a scalar bound: nothing to copy to the device)
        base = self.theta * ((s.factor * grown / s.max_position_embeddings) - (s.factor - 1)) ** (self.dim /
                                                                                                (self.dim - 2))
        grown_freq = 1.0 / (base ** exponents(self.dim, length.device))
        return torch.where(length > s.max_position_embeddings, grown_freq, self.inv_freq)

    def forward(self, positions, dtype):
        freqs = positions[..., None].float() * self.frequencies(positions)
        emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]
        f = self.attention_factor
        return (emb.cos() * f).to(dtype), (emb.sin() * f).to(dtype)
