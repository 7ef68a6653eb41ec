"""Qwen3 dense decoders (0.6B-32B): q/k RMSNorm, GQA, optional YaRN; Hugging Face checkpoint keys."""
from .model import Qwen3Config, Qwen3ForCausalLM

__all__ = ["Qwen3Config", "Qwen3ForCausalLM"]
