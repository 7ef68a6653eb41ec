"""Building blocks shared by every reference model: norm, rotary embedding, attention.

These functions are the oracle's math *and* the search patterns of `compile_passes`: the passes import
them, trace them and replace what they find, so keep each one a plain function of tensors.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .rope import inv_freq  # noqa: F401  (re-exported: the models' rotary tables)


class RMSNorm(nn.Module):
    """y = w * (x / rms(x)); the statistics are computed in fp32, the product in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x, weight, eps: float):
    """RMSNorm of x's last dim with `weight` (RMSNorm.forward, as a function: zoo's fused kernels take it as is)."""
    return weight * rms_normalize(x, eps)


def rms_normalize(x, eps: float):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate(x, cos, sin):
    """RoPE ("rotate_half" layout) in cos's dtype (fp32 cos = fp32 math). x: [..., H, D], cos/sin: [..., 1, D]."""
    xc = x.to(cos.dtype)
    return (xc * cos + rotate_half(xc) * sin).to(x.dtype)


def apply_rotary(q, k, cos, sin):
    """Rotate queries and keys by the same angles."""
    return rotate(q, cos, sin), rotate(k, cos, sin)


def attention(q, k, v, mask, scale: float):
    """Softmax attention with grouped KV heads.

    q: [B, H, T, Dqk], k: [B, Hkv, S, Dqk], v: [B, Hkv, S, Dv], mask: bool [B, 1, T, S] (True = attend).
    Softmax in fp32. A query that sees no key (a padding query) gives zeros.
    """
    b, hkv, s, _ = k.shape
    n_rep = q.shape[1] // hkv
    if n_rep > 1:  # kv head j serves query heads j * n_rep ... (j + 1) * n_rep - 1
        k = k[:, :, None].expand(b, hkv, n_rep, s, k.shape[-1]).reshape(b, hkv * n_rep, s, k.shape[-1])
        v = v[:, :, None].expand(b, hkv, n_rep, s, v.shape[-1]).reshape(b, hkv * n_rep, s, v.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1).masked_fill(~mask.any(-1, keepdim=True), 0).to(q.dtype)
    return torch.matmul(probs, v)


ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference)."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


__all__ = ["RMSNorm", "rms_norm", "rms_normalize", "rotate_half", "rotate", "apply_rotary", "attention", "activation",
           "inv_freq", "relative_error"]
