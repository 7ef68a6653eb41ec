"""Qwen2 / Qwen2.5 dense decoders: q/k/v biases, no q/k norm; Hugging Face checkpoint keys."""
from .model import Qwen2Config, Qwen2ForCausalLM

__all__ = ["Qwen2Config", "Qwen2ForCausalLM"]
