"""Vision attention by segments: each image / video frame's patches attend among themselves.

zoo_ref's vision encoder attends over a block-diagonal mask (mask_of_segments); the compiled encoder builds it
through `zoo::segment_mask` from the segments' bounds (cu_seqlens), and windows.attend_by_window swaps each
attention over it for `zoo::segment_attention`, which takes the bounds: memory linear in the patches.
"""
import torch
from torch import Tensor

from zoo_ref.qwen3_vl.vision import mask_of_segments

from .ops import empty_bthd, flash_fits, flash_varlen, masked_attention


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
    return empty_bthd(q, v.shape[-1])


@segment_attention.register_kernel("cuda")
def _segment_attention_cuda(q, k, v, cu_seqlens, max_len, scale):
    from .kernels.segment_gluon import SWITCH, segment_attention_gluon, segment_gluon_fits
    n, segments = q.shape[2], cu_seqlens.shape[0] - 1
    if max_len * segments == n:  # equal segments: one image, a video's frames, same-size images
        if segment_gluon_fits(q, k, v, segments):  # bf16, head dim 64, Hopper (kernels/segment_gluon.py)
            from triton.compiler.errors import CompilationError
            try:
                return segment_attention_gluon(q, k, v, segments, scale)
            except CompilationError as error:  # another Triton's Gluon: warned once, SDPA from now on
                SWITCH.turn_off(error)
        # else they are a batch for SDPA's fastest kernel (cuDNN on Hopper; H200, 16 heads of 64: 8 x 784 patches
        # 81 us, varlen 143 us; one 12,544-patch image 1.3 ms, FlashAttention 2.1 ms). Known from shapes alone: no
        # host read.
        def batch(x):  # [1, H, N, D] -> [segments, H, L, D] (a view)
            return x[0].unflatten(1, (segments, max_len)).transpose(0, 1)
        out = torch.nn.functional.scaled_dot_product_attention(batch(q), batch(k), batch(v), scale=scale,
                                                               enable_gqa=q.shape[1] != k.shape[1])
        # [segments, H, L, Dv] -> [1, H, N, Dv] with [1, N, H, Dv] memory (free when SDPA wrote [S, L, H, Dv])
        return out.transpose(1, 2).reshape(1, n, q.shape[1], v.shape[-1]).transpose(1, 2)
    if not flash_fits(q, k, v):
        return masked_attention(q, k, v, mask_of_segments(cu_seqlens, n), scale)

    def pack(x):  # [1, heads, N, D] (a view of [N, heads, D]) -> [N, heads, D]
        return x[0].transpose(0, 1)
    out = flash_varlen(pack(q), pack(k), pack(v), cu_seqlens.to(torch.int32), max_len, scale, causal=False)
    return out[None].transpose(1, 2)
