"""Qwen3ForCausalLM: the shared decoder with per-head q/k RMSNorm and no biases (attention_bias may turn them on)."""
from dataclasses import dataclass
from pathlib import Path

from ..causal_lm import CausalLM
from ..decoder import DecoderConfig, decoder_config_dict, decoder_fields
from ..errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"  # Qwen3-0.6B / 1.7B / 4B / 8B config.json files


@dataclass
class Qwen3Config(DecoderConfig):
    @classmethod
    def from_dict(cls, d: dict) -> "Qwen3Config":
        if d.get("model_type") != "qwen3":
            raise ConfigError(f"expected model_type 'qwen3', got {d.get('model_type')!r}")
        return cls(**decoder_fields(d, "Qwen3 config", head_dim=128, qk_norm=True))  # transformers' head_dim default

    def to_dict(self) -> dict:
        d = decoder_config_dict(self, "qwen3", "Qwen3ForCausalLM")
        d["attention_bias"] = self.qkv_bias
        return d


class Qwen3ForCausalLM(CausalLM):
    config_class = Qwen3Config
