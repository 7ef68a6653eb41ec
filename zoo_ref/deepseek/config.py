"""MLA configuration from a DeepSeek-V3/R1 config.json (transformers' DeepseekV3Config fields)."""
import math
from dataclasses import dataclass

import torch


class MLAConfigError(ValueError):
    pass


@dataclass
class YarnConfig:
    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass
class MLAConfig:
    hidden_size: int = 7168
    num_attention_heads: int = 128
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rope_theta: float = 10000.0
    rope_interleave: bool = True
    yarn: YarnConfig | None = None
    max_position_embeddings: int = 163840
    attention_bias: bool = False

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @classmethod
    def from_dict(cls, d: dict) -> "MLAConfig":
        if d.get("model_type") not in (None, "deepseek_v3", "deepseek_v2", "kimi_k2"):
            raise MLAConfigError(f"expected a DeepSeek-V3 config (model_type 'deepseek_v3'), got {d.get('model_type')!r}")
        required = ["hidden_size", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                    "v_head_dim"]
        missing = [k for k in required if d.get(k) is None]
        if missing:
            raise MLAConfigError(f"MLA config is missing required field(s): {', '.join(missing)}")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        max_pos = d.get("max_position_embeddings", 163840)
        yarn = None
        if rope_type == "yarn":
            if "original_max_position_embeddings" not in rope:
                raise MLAConfigError("yarn rope scaling needs original_max_position_embeddings")
            factor = rope.get("factor") or max_pos / rope["original_max_position_embeddings"]
            yarn = YarnConfig(factor=float(factor),
                              original_max_position_embeddings=rope["original_max_position_embeddings"],
                              beta_fast=rope.get("beta_fast") or 32, beta_slow=rope.get("beta_slow") or 1,
                              mscale=rope.get("mscale"), mscale_all_dim=rope.get("mscale_all_dim"),
                              attention_factor=rope.get("attention_factor"), truncate=rope.get("truncate", True))
        elif rope_type != "default":
            raise MLAConfigError(f"unsupported rope_type {rope_type!r} (supported: 'default', 'yarn')")
        if d["qk_rope_head_dim"] % 2:
            raise MLAConfigError(f"qk_rope_head_dim must be even, got {d['qk_rope_head_dim']}")
        return cls(hidden_size=d["hidden_size"], num_attention_heads=d["num_attention_heads"],
                   q_lora_rank=d.get("q_lora_rank"), kv_lora_rank=d["kv_lora_rank"],
                   qk_nope_head_dim=d["qk_nope_head_dim"], qk_rope_head_dim=d["qk_rope_head_dim"],
                   v_head_dim=d["v_head_dim"], rope_theta=float(theta),
                   rope_interleave=bool(d.get("rope_interleave", True)), yarn=yarn, max_position_embeddings=max_pos,
                   attention_bias=bool(d.get("attention_bias", False)))


def _yarn_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(c: MLAConfig) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN."""
    scale = c.qk_head_dim ** -0.5
    if c.yarn is not None and c.yarn.mscale_all_dim:
        scale *= _yarn_mscale(c.yarn.factor, c.yarn.mscale_all_dim) ** 2
    return scale


def rope_inv_freq(c: MLAConfig):
    """-> (inv_freq [rope_dim / 2] fp32, attention_factor applied to cos/sin)."""
    dim, base = c.qk_rope_head_dim, c.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if c.yarn is None:
        return 1.0 / pos_freqs, 1.0
    y = c.yarn

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
    inv_freq = (1.0 / (y.factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    if y.attention_factor is not None:
        attention_factor = y.attention_factor
    elif y.mscale and y.mscale_all_dim:
        attention_factor = _yarn_mscale(y.factor, y.mscale) / _yarn_mscale(y.factor, y.mscale_all_dim)
    else:
        attention_factor = _yarn_mscale(y.factor)
    return inv_freq, float(attention_factor)
