"""Custom FX/Inductor passes that replace zoo_ref's attention and RoPE with fused kernels."""
from .manager import PASSES, ZooPassManager

__all__ = ["PASSES", "ZooPassManager"]
