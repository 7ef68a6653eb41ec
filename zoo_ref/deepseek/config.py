"""MLA configuration from a DeepSeek-V3/R1 config.json (transformers' DeepseekV3Config fields)."""
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..rope import RopeConfigError, YarnConfig, parse_rope, yarn_mscale
from ..rope import rope_inv_freq as _rope_inv_freq

CONFIGS = Path(__file__).parent / "configs"  # deepseek-r1.json: DeepSeek-R1 / V3 shapes


class MLAConfigError(ConfigError):
    pass


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
            raise MLAConfigError(f"expected a DeepSeek-V3 config (model_type 'deepseek_v3'), got "
                                 f"{d.get('model_type')!r}")
        required = ["hidden_size", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                    "v_head_dim"]
        missing = [k for k in required if d.get(k) is None]
        if missing:
            raise MLAConfigError(f"MLA config is missing required field(s): {', '.join(missing)}")
        max_pos = d.get("max_position_embeddings", 163840)
        try:
            theta, yarn, _ = parse_rope({**d, "max_position_embeddings": max_pos})
        except RopeConfigError as e:
            raise MLAConfigError(str(e)) from None
        if d["qk_rope_head_dim"] % 2:
            raise MLAConfigError(f"qk_rope_head_dim must be even, got {d['qk_rope_head_dim']}")
        return cls(hidden_size=d["hidden_size"], num_attention_heads=d["num_attention_heads"],
                   q_lora_rank=d.get("q_lora_rank"), kv_lora_rank=d["kv_lora_rank"],
                   qk_nope_head_dim=d["qk_nope_head_dim"], qk_rope_head_dim=d["qk_rope_head_dim"],
                   v_head_dim=d["v_head_dim"], rope_theta=theta,
                   rope_interleave=bool(d.get("rope_interleave", True)), yarn=yarn, max_position_embeddings=max_pos,
                   attention_bias=bool(d.get("attention_bias", False)))


def softmax_scale(c: MLAConfig) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN."""
    scale = c.qk_head_dim ** -0.5
    if c.yarn is not None and c.yarn.mscale_all_dim:
        scale *= yarn_mscale(c.yarn.factor, c.yarn.mscale_all_dim) ** 2
    return scale


def rope_inv_freq(c: MLAConfig):
    """-> (inv_freq [rope_dim / 2] fp32, attention_factor applied to cos/sin)."""
    return _rope_inv_freq(c.qk_rope_head_dim, c.rope_theta, c.yarn)
