"""Qwen2ForCausalLM: the shared decoder with q/k/v biases (o_proj has none) and no q/k norm."""
from dataclasses import dataclass
from pathlib import Path

from ..causal_lm import CausalLM
from ..decoder import DecoderConfig, decoder_config_dict, decoder_fields
from ..errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"  # Qwen2.5-0.5B / 1.5B / 7B config.json files


@dataclass
class Qwen2Config(DecoderConfig):
    @classmethod
    def from_dict(cls, d: dict) -> "Qwen2Config":
        if d.get("model_type") != "qwen2":
            raise ConfigError(f"expected model_type 'qwen2', got {d.get('model_type')!r}")
        return cls(**decoder_fields(d, "Qwen2 config", qkv_bias=True, qk_norm=False))

    def to_dict(self) -> dict:
        d = decoder_config_dict(self, "qwen2", "Qwen2ForCausalLM")
        return d


class Qwen2ForCausalLM(CausalLM):
    config_class = Qwen2Config
