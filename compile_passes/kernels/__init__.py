"""Triton kernels behind zoo's custom ops (imported lazily: CPU installs need no Triton)."""
