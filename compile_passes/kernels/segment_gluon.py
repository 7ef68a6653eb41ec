"""Vision attention over equal segments on Hopper, bf16 at head dim 64: which calls the Gluon kernel
(segment_attention_ws.py) serves, and its launch. SDPA (cuDNN) serves the rest, and everything with
ZOO_SEGMENT_GLUON=0; ZOO_SEGMENT_GLUON=1 takes every call that fits, whatever its size (A/B runs).

The size rule is measured (H200, fourteenth session, 16 heads, bench/RESULTS.md): with a program per 192 queries
of a head and segment, one program an SM, the kernel wins once its programs fill several waves (one 12,544-patch
image: 1119-1177 us against cuDNN's 1290-1311; 8 x 784 patches: 70.0 against 74.1, same run), draws at 4096 patches
(2.7 waves: 145-148 against 147; in the encoder 149 against 153 of kernel time, the same call time) and loses
below (one 784-patch image 15.2-15.4 against 14.2-14.4; 3 x 1000: 41-43 against 37.7).
"""
import os

import torch

from .gluon_switch import GluonSwitch
from .splitk import _sms, cdiv

try:  # Gluon ships with Triton >= 3.4 (its API moves between releases: the switch covers compile errors)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .segment_attention_ws import BLOCK_M, BLOCK_N, LOG2E, WGS, D, _segment_attention_kernel, gl, gluon
except (ImportError, AttributeError):  # pragma: no cover - older Triton: SDPA serves every call
    gluon = None

SWITCH = GluonSwitch("the Gluon segment attention kernel", "ZOO_SEGMENT_GLUON", "SDPA")


def _programs(q, segments: int) -> int:
    """The kernel's grid size: 192-query blocks x heads x segments."""
    return cdiv(q.shape[2] // segments, WGS.value * BLOCK_M.value) * q.shape[1] * segments


def segment_gluon_fits(q, k, v, segments: int) -> bool:
    """Whether segment_attention_gluon serves this call: q/k/v [1, H, N, 64] bf16, as many key as query heads,
    each token's heads side by side in a row of H * 64 (unit stride, 16-byte aligned), on Hopper, big enough."""
    if gluon is None or not SWITCH.on(q):
        return False
    h = q.shape[1]
    for x in (q, k, v):
        if x.dtype != torch.bfloat16 or x.shape[1] != h or x.shape[3] != D.value or x.stride(3) != 1 \
                or (h > 1 and x.stride(1) != D.value) or x.stride(2) % 8 or x.data_ptr() % 16:
            return False
    return os.environ.get(SWITCH.env) == "1" or _programs(q, segments) >= 4 * _sms(q.device)


def segment_attention_gluon(q, k, v, segments: int, scale: float):
    """softmax(q k^T * scale) v within each of `segments` equal segments of q/k/v [1, H, N, 64] -> [1, H, N, 64]
    with [1, N, H, 64] memory (what the output projection reads)."""
    _, h, n, d = q.shape
    length = n // segments
    out = torch.empty(n, h, d, dtype=q.dtype, device=q.device)[None].transpose(1, 2)  # [1, H, N, 64]

    def desc(x, rows):  # [segments, L, H * 64]: TMA zero-fills rows past a segment's end, its store clips them
        tok = x.stride(2)
        view = torch.as_strided(x, (segments, length, h * d), (length * tok, tok, 1))
        return TensorDescriptor.from_tensor(view, [1, rows, d],
                                            gl.NVMMASharedLayout.get_default_for([1, rows, d], gl.bfloat16))
    bm, bn = BLOCK_M.value, BLOCK_N.value
    _segment_attention_kernel[(cdiv(length, WGS.value * bm), h, segments)](
        desc(q, bm), desc(k, bn), desc(v, bn), desc(out, bm), length, scale * LOG2E, num_warps=4)
    return out
