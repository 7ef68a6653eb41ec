"""Vision attention over equal segments on Hopper, bf16 at head dim 64: which calls the Gluon kernel
(segment_attention_ws.py) serves, and its launch. SDPA (cuDNN) serves everything else, and every call with
ZOO_SEGMENT_GLUON=0.

The kernel takes every call it fits, measured (H200, bench/RESULTS.md). Alone, with a program per 192 queries of a
head and segment and one program an SM, it wins once its programs fill several waves (one 12,544-patch image:
1119-1177 us against cuDNN's 1290-1311; 8 x 784 patches 70.0 against 74.1), draws at 4096 patches (2.7 waves:
145-148 against 147) and loses ~1-3 us below (one 784-patch image 15.2 against 14.2; 3 x 1000: 41 against 37.7).
In the encoder's CUDA graph cuDNN's call costs more than its kernel: a memset node before it, and ~4 us of idle GPU
around the two (fifteenth session, 1024 x 1024 image: 24 memsets and 67 us of gaps in a call). The whole encoder,
one process each, Inductor's kernels with PDL: 448 x 448 1.85 against 1.95 ms, 1024 x 1024 8.47 against 8.62.
"""
import torch

from .gluon_switch import GluonSwitch
from .splitk import cdiv

try:  # Gluon ships with Triton >= 3.4 (its API moves between releases: the switch covers compile errors)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .segment_attention_ws import BLOCK_M, BLOCK_N, LOG2E, WGS, D, _segment_attention_kernel, gl, gluon
except (ImportError, AttributeError):  # pragma: no cover - older Triton: SDPA serves every call
    gluon = None

SWITCH = GluonSwitch("the Gluon segment attention kernel", "ZOO_SEGMENT_GLUON", "SDPA")


def segment_gluon_fits(q, k, v, segments: int) -> bool:
    """Whether segment_attention_gluon serves this call: q/k/v [1, H, N, 64] bf16, as many key as query heads,
    each token's heads side by side in a row of H * 64 (unit stride, 16-byte aligned), on Hopper."""
    if gluon is None or not SWITCH.on(q):
        return False
    h = q.shape[1]
    for x in (q, k, v):
        if x.dtype != torch.bfloat16 or x.shape[1] != h or x.shape[3] != D.value or x.stride(3) != 1 \
                or (h > 1 and x.stride(1) != D.value) or x.stride(2) % 8 or x.data_ptr() % 16:
            return False
    return True


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
