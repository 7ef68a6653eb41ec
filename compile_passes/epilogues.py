"""GELU (tanh) of a linear -> zoo::linear_gelu_tanh, one matmul with the GELU in its epilogue on CUDA (cuBLASLt
through aten._addmm_activation; plain torch elsewhere).

The vision MLP's fc1 output (patches x 4096) is otherwise written by the matmul, then read and written again by an
elementwise kernel: for 4096 patches 71 -> 56 us per block on an H200, 24 blocks. The epilogue applies the GELU to
the fp32 accumulator before rounding (the unfused path rounds first). The search is traced per dtype (the GELU's
decomposition casts bf16 / fp16 to fp32 and back); there is no zoo_ref function to record call sites from, so the
layouts are the linear's own: bias [N], x [M, K], weight [N, K] transposed.
"""
import torch
import torch.nn.functional as F

from . import ops  # noqa: F401  (registers torch.ops.zoo.*)
from .patterns import Replacement


def _search(bias, x, w):
    return F.gelu(torch.addmm(bias, x, w.permute(1, 0)), approximate="tanh")


def _replace(bias, x, w):
    return torch.ops.zoo.linear_gelu_tanh(x, w, bias)


def _shapes_ok(match) -> bool:
    b, x, w = (match.kwargs[n].meta["val"] for n in ("bias", "x", "w"))
    return b.dim() == 1 and x.dim() == w.dim() == 2 and b.dtype == x.dtype == w.dtype


def gelu_epilogue_replacements():
    rep = Replacement("gelu_epilogue", None, _search, _replace, extra_check=_shapes_ok)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        rep.register_like([torch.empty(8, dtype=dtype), torch.empty(4, 6, dtype=dtype), torch.empty(8, 6, dtype=dtype)])
    return [rep]
