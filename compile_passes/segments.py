"""Vision attention by segments: each image / video frame's patches attend among themselves.

zoo_ref's vision encoder attends over a block-diagonal mask (mask_of_segments); the compiled encoder builds it
through `zoo::segment_mask` from the segments' bounds (cu_seqlens), and windows.attend_by_window swaps each
attention over it for `zoo::segment_attention`, which takes the bounds: memory linear in the patches.
"""
import torch
from torch import Tensor

from zoo_ref.qwen3_vl.vision import mask_of_segments

from .ops import _empty_bthd, _flash_fits, _masked, bthd, flash_varlen


@torch.library.custom_op("zoo::segment_mask", mutates_args=())
def segment_mask(cu_seqlens: Tensor, max_len: int, size: int) -> Tensor:
    """zoo_ref's block-diagonal mask of the segments [cu[i], cu[i+1]) (vision: one per image frame), [1, 1, size,
    size]; max_len (the longest segment) is for the kernels that replace it."""
    return mask_of_segments(cu_seqlens, size)


@segment_mask.register_fake
def _(cu_seqlens, max_len, size):
    return cu_seqlens.new_empty(1, 1, size, size, dtype=torch.bool)


@torch.library.custom_op("zoo::segment_attention", mutates_args=())
def segment_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int, scale: float) -> Tensor:
    """attention(q, k, v, segment_mask(cu_seqlens, ...), scale) segment by segment: q/k/v [1, H, N, D] ->
    [1, H, N, Dv] ([1, N, H, Dv] memory). Memory linear in N; each segment one SDPA call (CPU)."""
    out = q.new_empty(1, q.shape[2], q.shape[1], v.shape[-1])
    bounds = cu_seqlens.tolist()  # a host read: the CPU body (and the CUDA fallback) only
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = torch.nn.functional.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=scale,
                                                               enable_gqa=q.shape[1] != k.shape[1])
        out[:, a:b] = seg.transpose(1, 2)
    return out.transpose(1, 2)


@segment_attention.register_fake
def _(q, k, v, cu_seqlens, max_len, scale):
    return _empty_bthd(q, v.shape[-1])


@segment_attention.register_kernel("cuda")
def _segment_attention_cuda(q, k, v, cu_seqlens, max_len, scale):
    n = q.shape[2]
    if max_len == n:  # one segment (one image frame): plain attention, SDPA's fastest kernel (cuDNN on the H100)
        return bthd(torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale,
                                                                     enable_gqa=q.shape[1] != k.shape[1]))
    if not _flash_fits(q, k, v):
        return _masked(q, k, v, mask_of_segments(cu_seqlens, n), scale)

    def pack(x):  # [1, heads, N, D] (a view of [N, heads, D]) -> [N, heads, D]
        return x[0].transpose(0, 1)
    out = flash_varlen(pack(q), pack(k), pack(v), cu_seqlens.to(torch.int32), max_len, scale, causal=False)
    return out[None].transpose(1, 2)
