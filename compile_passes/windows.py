"""Attention driven by structure: each row's token window instead of a mask over the static cache.

The runtime describes a step by each row's window (its tokens fill slots [key_start, key_end)) and the query
slots, and builds the reference's mask from it through `zoo::window_mask` (decode: queries at `query_slots` over
the whole static cache) or `zoo::prompt_mask` (a prompt written from slot 0: T queries over its T slots). These
ops compute exactly zoo_ref's `window_mask`, so an uncompiled or unrewritten graph runs the oracle's math.

`attend_by_window` then rewrites every `zoo::attention(q, k, v, <window or prompt mask>, scale)` into
`zoo::window_attention` / `zoo::prompt_attention`, which take the window itself; the mask ops lose their users and
are erased, so no [B, 1, T, S] mask is built or read:
- decode, and the suffix after a reused conversation prefix (T <= 256 queries), on CUDA: a split-K Triton kernel
  (kernels/gqa_decode.py) that loops over each query's visible keys only, its splits sized on the device from the
  window (CUDA-graph safe, no host sync; the queries of one row re-read its keys from L2);
- prompts without padding: SDPA's causal kernel (on the H100 about twice as fast as FlashAttention varlen);
- padded prompts on CUDA (bf16/fp16): FlashAttention varlen over the packed prompt, each row cut into three causal
  segments (padding before, tokens, padding after), the padding queries' outputs zeroed; GQA without copies;
- CPU, and what the kernels do not cover (fp32 prompts on CUDA): the reference's masked softmax over the used slots.
A query outside its row's window (a padding query) gives zeros, as in zoo_ref. A sliding-window layer's
`zoo::sliding_mask` over those masks becomes the attention's `window` argument (each query's last `window` slots:
the kernel starts there; varlen takes it as window_size). The vision's segment masks (segments.py) and the MLA's
length masks (latent.py) are rewritten here too.
"""
import torch
from torch import Tensor

from zoo_ref.decoder import sliding_mask as _sliding_mask
from zoo_ref.decoder import window_mask as _window_mask

from . import latent, segments  # noqa: F401  (register zoo::mla_*, zoo::segment_*)
from .ops import bthd, empty_bthd, flash_fits, flash_varlen, masked_attention, varlen_takes_window


@torch.library.custom_op("zoo::window_mask", mutates_args=())
def window_mask(key_start: Tensor, key_end: Tensor, query_slots: Tensor, size: int) -> Tensor:
    """zoo_ref.decoder.window_mask: bool [B, 1, T, size]."""
    return _window_mask(key_start, key_end, query_slots, size)


@window_mask.register_fake
def _(key_start, key_end, query_slots, size):
    return key_start.new_empty(key_start.shape[0], 1, query_slots.shape[0], size, dtype=torch.bool)


@torch.library.custom_op("zoo::prompt_mask", mutates_args=())
def prompt_mask(key_start: Tensor, key_end: Tensor, size: int, padded: bool) -> Tensor:
    """The mask of a prompt written from slot 0: `size` queries at slots 0..size-1 over those slots.
    padded=False is the caller's promise that every window is the whole prompt ([0, size)): then the attention
    is plain causal (the kernels pick a faster path); it does not change the mask."""
    return _prompt_window_mask(key_start, key_end, size)


@torch.library.custom_op("zoo::sliding_mask", mutates_args=())
def sliding_mask(mask: Tensor, query_slots: Tensor, window: int) -> Tensor:
    """zoo_ref.decoder.sliding_mask (a sliding-window layer's mask: each query's last `window` slots), swapped in by
    the attention pass where zoo_ref calls it, so that attend_by_window sees the window mask beneath."""
    return _sliding_mask(mask, query_slots, window)


@sliding_mask.register_fake
def _(mask, query_slots, window):
    return torch.empty_like(mask)


def _prompt_window_mask(key_start, key_end, size, window=0):
    """window_mask for `size` queries at slots 0..size-1 over those slots (limited to the last `window`: 0 none)."""
    slots = torch.arange(size, device=key_start.device)
    mask = _window_mask(key_start, key_end, slots, size)
    return _sliding_mask(mask, slots, window) if window else mask


@prompt_mask.register_fake
def _(key_start, key_end, size, padded):
    return key_start.new_empty(key_start.shape[0], 1, size, size, dtype=torch.bool)


# One program per (query, kv head, split): past a few hundred queries the re-reads of the row's keys outgrow a
# flash kernel's single pass; up to here they come from L2 (a chat turn's suffix: tens of tokens).
WINDOW_KERNEL_MAX_QUERIES = 256


@torch.library.custom_op("zoo::window_attention", mutates_args=())
def window_attention(q: Tensor, k: Tensor, v: Tensor, key_start: Tensor, key_end: Tensor, query_slots: Tensor,
                     scale: float, window: int = 0) -> Tensor:
    """attention(q, k, v, window_mask(key_start, key_end, query_slots, S), scale) reading only the slots below the
    last visible key. q [B, H, T, D], k/v [B, Hkv, S, D] (the static cache) -> [B, H, T, Dv]. window > 0: a
    sliding-window layer's (sliding_mask of that mask): each query sees at most its last `window` slots."""
    return _window_dense(q, k, v, key_start, key_end, query_slots, scale, window)


def _window_dense(q, k, v, key_start, key_end, query_slots, scale, window=0):
    """The reference's masked softmax over the slots below the last visible key (one host read for that bound:
    the CPU body, and on CUDA what the window kernel does not cover: a suffix of more than 256 tokens after a
    reused prefix, fp32 with head dims above 256)."""
    n = max(1, int(torch.minimum(key_end.max(), query_slots.max() + 1)))
    k, v = k[:, :, :n], v[:, :, :n]
    mask = _window_mask(key_start, key_end, query_slots, n)
    return masked_attention(q, k, v, _sliding_mask(mask, query_slots, window) if window else mask, scale)


@window_attention.register_fake
def _(q, k, v, key_start, key_end, query_slots, scale, window=0):
    return empty_bthd(q, v.shape[-1])


@window_attention.register_kernel("cuda")
def _window_attention_cuda(q, k, v, key_start, key_end, query_slots, scale, window=0):
    if q.shape[2] <= WINDOW_KERNEL_MAX_QUERIES and q.shape[-1] == v.shape[-1] <= 256 and q.shape[1] % k.shape[1] == 0:
        from .kernels.gqa_decode import gqa_window_decode_triton
        return gqa_window_decode_triton(q, k, v, key_start, key_end, query_slots, scale, window=window)
    return _window_dense(q, k, v, key_start, key_end, query_slots, scale, window)


@torch.library.custom_op("zoo::prompt_attention", mutates_args=())
def prompt_attention(q: Tensor, k: Tensor, v: Tensor, key_start: Tensor, key_end: Tensor, scale: float,
                     padded: bool, window: int = 0) -> Tensor:
    """attention(q, k, v, prompt_mask(key_start, key_end, T, padded), scale): q [B, H, T, D], k/v [B, Hkv, T, D]
    (a prompt's own slots) -> [B, H, T, Dv]. Unpadded: SDPA's causal kernel (flash / cuDNN on CUDA), GQA without
    copies. window > 0: each query sees at most its last `window` slots (a sliding-window layer)."""
    if not padded and not window:
        return _causal(q, k, v, scale)
    return masked_attention(q, k, v, _prompt_window_mask(key_start, key_end, q.shape[2], window), scale)


def _causal(q, k, v, scale):
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                           enable_gqa=q.shape[1] != k.shape[1])
    return bthd(out)


@prompt_attention.register_fake
def _(q, k, v, key_start, key_end, scale, padded, window=0):
    return empty_bthd(q, v.shape[-1])


@prompt_attention.register_kernel("cuda")
def _prompt_attention_cuda(q, k, v, key_start, key_end, scale, padded, window=0):
    b, h, t, d = q.shape
    if not padded and not window:
        return _causal(q, k, v, scale)
    if not flash_fits(q, k, v) or (window and not varlen_takes_window()):
        return masked_attention(q, k, v, _prompt_window_mask(key_start, key_end, t, window), scale)
    # Pack the rows ([B, T] -> B*T tokens) and cut each into three causal segments: padding before its window,
    # its tokens, padding after. Every token segment attends causally to itself only; padding segments compute
    # garbage that is zeroed below. q/k/v are transposed views of [B, T, heads, D] (the runtime's prompt attends
    # over its own K/V): packing them is free; other layouts cost one copy, linear in the prompt's length.
    row = torch.arange(b, device=q.device)[:, None] * t
    cu = torch.cat([(row + torch.stack([torch.zeros_like(key_start), key_start, key_end], 1)).flatten(),
                    row.new_full((1,), b * t)]).to(torch.int32)

    def pack(x):  # [B, heads, T, D] -> [B*T, heads, D]
        return x.transpose(1, 2).reshape(b * t, x.shape[1], x.shape[-1])
    out = flash_varlen(pack(q), pack(k), pack(v), cu, t, scale, causal=True, window=window).view(b, t, h, d)
    slots = torch.arange(t, device=q.device)
    inside = (slots >= key_start[:, None]) & (slots < key_end[:, None])  # [B, T]
    return torch.where(inside[:, :, None, None], out, 0).transpose(1, 2)


# (attention op, mask op) -> (the op that takes the structure instead, its args from the attention's and the mask's)
REWRITES = {
    (torch.ops.zoo.attention.default, torch.ops.zoo.window_mask.default):
        (torch.ops.zoo.window_attention.default, lambda a, m: (*a[:3], *m[:3], a[4])),  # + slots
    (torch.ops.zoo.attention.default, torch.ops.zoo.prompt_mask.default):
        (torch.ops.zoo.prompt_attention.default, lambda a, m: (*a[:3], *m[:2], a[4], m[3])),  # + padded
    (torch.ops.zoo.attention.default, torch.ops.zoo.segment_mask.default):
        (torch.ops.zoo.segment_attention.default, lambda a, m: (*a[:3], *m[:2], a[4])),  # cu_seqlens, max_len
    (torch.ops.zoo.mla_latent_attention.default, torch.ops.zoo.mla_mask.default):
        (torch.ops.zoo.mla_window_attention.default, lambda a, m: (*a[:4], *m[:2], a[5])),  # start_pos, seq_lens
}
MASK_OPS = {mask for _, mask in REWRITES} | {torch.ops.zoo.sliding_mask.default}


def _structure(mask):
    """(the structure mask, sliding window or 0): a sliding-window layer's zoo::sliding_mask over a window or prompt
    mask gives that mask and its window."""
    inner = mask.args[0] if mask.target is torch.ops.zoo.sliding_mask.default else None
    if isinstance(inner, torch.fx.Node) and inner.target in (torch.ops.zoo.window_mask.default,
                                                             torch.ops.zoo.prompt_mask.default):
        return inner, mask.args[2]
    return mask, 0


def attend_by_window(graph: torch.fx.Graph) -> list:
    """Attention over a structure mask (window / prompt / segment / MLA lengths) -> the op that takes the structure
    (see REWRITES); masks left without users are erased. Returns the new nodes."""
    rewritten = []
    for node in list(graph.nodes):
        if node.op != "call_function" or len(node.args) < 5:
            continue
        if not isinstance(node.args[-2], torch.fx.Node):
            continue
        mask, window = _structure(node.args[-2])
        if (node.target, mask.target) not in REWRITES:
            continue
        target, args = REWRITES[(node.target, mask.target)]
        with graph.inserting_before(node):
            new = graph.call_function(target, (*args(node.args, mask.args), *([window] if window else [])))
        # same output (shape, dtype, strides) and layer; not the old call's recorded inputs (eager_input_vals)
        new.meta.update({key: node.meta[key] for key in ("val", "nn_module_stack", "stack_trace") if key in node.meta})
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        if target is torch.ops.zoo.mla_window_attention.default:
            latent.fold_row_gathers(new)  # packed prompt tokens: the kernel reads their cache rows in place
        rewritten.append(new)
    for node in reversed(list(graph.nodes)):  # a sliding mask before the window mask beneath it
        if node.op == "call_function" and node.target in MASK_OPS and not node.users:
            graph.erase_node(node)
    return rewritten


def masks_left(graph: torch.fx.Graph) -> int:
    """Window/prompt/segment masks still built in the graph (an attention site the rewrite did not reach)."""
    return sum(n.op == "call_function" and n.target in MASK_OPS for n in graph.nodes)
