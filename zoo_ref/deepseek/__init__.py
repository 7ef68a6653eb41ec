"""DeepSeek MLA reference (the correctness oracle): naive and absorbed attention over a latent cache."""
from .config import CONFIGS, MLAConfig, MLAConfigError, YarnConfig, rope_inv_freq, softmax_scale
from .mla import MLA, MLACache, deinterleave, latent_attention

__all__ = ["CONFIGS", "MLAConfig", "MLAConfigError", "YarnConfig", "MLA", "MLACache", "latent_attention",
           "deinterleave",
           "rope_inv_freq", "softmax_scale"]
