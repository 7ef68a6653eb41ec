"""Custom FX/Inductor passes that replace zoo_ref's attention and RoPE with fused kernels."""
