"""Compiled Qwen3-VL: the shared decoder runtime plus the compiled vision encoder (one CUDA graph per distinct
set of image/video grids on GPU, layout memoized) and deepstack levels fed to the prefill.

The encoder attends by segment: the graph gets each frame's bounds (cu_seqlens) and builds the reference's
block-diagonal mask from them through zoo::segment_mask, which the attention pass swaps for attention per segment
(on CUDA, equally long segments: zoo's Gluon kernel on Hopper when they are many and long, else one SDPA batch;
unequal ones: FlashAttention varlen): memory linear in the number of patches, several images and frames in one
call. Each block runs through a compiled region
(zoo/regions.py) and leaves its last residual add to the next one, which fuses it with the norm that reads the sum
(Inductor cannot fold an add into cuBLAS's GEMM): one kernel fewer per block; only the blocks whose output is read
(deepstack taps, the last) add theirs."""
import functools
import weakref

import torch

from compile_passes.segments import segment_mask
from zoo_ref.errors import InputError
from zoo_ref.qwen3_vl import Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.vision import segment_bounds

from .encoder_cache import EncoderCache, item_keys
from .regions import Regions
from .registry import register
from .runtime import CompiledDecoder


@register(Qwen3VLForConditionalGeneration)
class CompiledQwen3VL(CompiledDecoder):
    def __init__(self, model, *args, encoder_cache_mb=256, **kwargs):
        self._layouts = {}  # per distinct set of image/video grids
        self._keys_memo = None  # the last (pixels, grid) tensors' item keys: hashed once per call
        self._grid_memo = None  # the last device grid read: (its tensor, its version, the grids)
        visual = model.model.visual
        read = set(visual.c.deepstack_visual_indexes) | {len(visual.blocks) - 1}  # blocks whose output is used
        self._summed_blocks = {id(b) for i, b in enumerate(visual.blocks) if i in read}
        super().__init__(model, *args, **kwargs)
        if isinstance(encoder_cache_mb, bool) or not isinstance(encoder_cache_mb, (int, float)) or encoder_cache_mb < 0:
            raise InputError(f"encoder_cache_mb must be a number >= 0 (0: no cache), got {encoder_cache_mb!r}")
        self.encoder_cache = EncoderCache(int(encoder_cache_mb * 2 ** 20)) if encoder_cache_mb else None
        self._vision = functools.partial(self._vision_fn, Regions(self.compiler, "vision", self._vision_block, True,
                                                                  self._sites))
        # what runs around the blocks, compiled too (fused: the position mix, the rotary tables, the mergers' norms
        # and GELUs); the two merger kinds (norm before / after the 2x2 shuffle) are two functions, a graph each
        self._vision_embed = self.compiler(self._embed_body, "vision embed", dynamic=True)
        self._vision_mergers = {kind: self.compiler(self._merger_body, f"vision {kind}", dynamic=True)
                                for kind in ("merger", "deepstack merger")}

    @staticmethod
    def _vision_block(block, x, cos, sin, cache, cache_pos, pending, cu_seqlens, max_len: int, window: int):
        """One vision block (a compiled region: zoo/regions.py) over its frames' segments (no cache, no window), on
        x + pending (the block before's MLP output, zeros after a block that added its own) -> block.parts."""
        return block.parts(x + pending, cos, sin, segment_mask(cu_seqlens, max_len, x.shape[0]))

    @staticmethod
    def _embed_body(visual, pixels, rows, cols, taps, weights):
        return visual.embed(pixels, rows, cols, taps, weights)

    @staticmethod
    def _merger_body(merger, x):
        return merger(x)

    def _vision_fn(self, blocks, rows, cols, taps, weights, cu_seqlens, max_len: int, pixels):
        visual = self.model.model.visual
        zeros = pending = None

        def block_fn(block, x, cos, sin, structure):
            """The block's output for zoo_ref's encode loop: the sum where it is read, else the residual stream with
            the MLP's output left pending for the next block."""
            nonlocal zeros, pending
            if zeros is None:
                zeros = pending = torch.zeros_like(x)
            x, mlp_out = blocks.vision_block(block, x, cos, sin, (pending, *structure))
            if id(block) in self._summed_blocks:
                pending = zeros
                return x + mlp_out
            pending = mlp_out
            return x

        def embed_fn(*args):
            return self._vision_embed(visual, *args)

        def merger_fn(merger, x):
            return self._vision_mergers["merger" if merger is visual.merger else "deepstack merger"](merger, x)
        return visual.encode(pixels, rows, cols, taps, weights, (cu_seqlens, max_len), block_fn, embed_fn, merger_fn)

    def _layer_sites(self):
        blocks = self.model.model.visual.blocks
        return {**super()._layer_sites(), **{id(b): f"blocks.{i}" for i, b in enumerate(blocks)}}

    def _levels(self):
        return len(self.config.vision.deepstack_visual_indexes)

    def _record_extra(self):
        v = self.config.vision
        grid = torch.tensor([[1, 2 * v.spatial_merge_size, 2 * v.spatial_merge_size]], device=self.device)
        pixels = torch.zeros(int(grid.prod()), v.patch_dim, dtype=self.dtype, device=self.device)
        self.model.model.visual(pixels, grid)

    def embed(self, input_ids, **inputs):
        return self.model.embed(input_ids, vision=self.encode_vision, **inputs)

    def _vision_items(self, input_ids, inputs) -> list:
        """Each image's placeholder span and content key; a video (its frames' placeholders interleave with
        timestamps) gets no key: a prefix is never reused past one."""
        c, ids, items = self.config, input_ids[0], []
        pixels, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
        if pixels is not None and grid is not None:
            where = (ids == c.image_token_id).nonzero()[:, 0].tolist()
            start = 0
            for row, key in zip(grid.tolist(), self._item_keys(pixels, grid)):
                n = row[0] * row[1] * row[2] // c.vision.spatial_merge_size ** 2
                items.append((where[start], where[start + n - 1] + 1, key))
                start += n
        video = (ids == c.video_token_id).nonzero()
        if len(video):
            items.append((int(video[0]), len(ids), None))
        return sorted(items, key=lambda item: item[0])

    @torch.no_grad()
    def encode_vision(self, pixels, grid_thw):
        """Vision features of a call's images/videos: from the content-keyed cache where seen before, the compiled
        encoder for the rest."""
        if self.encoder_cache is None:
            return self._encode(pixels, grid_thw)
        return self.encoder_cache.encode(functools.partial(self._encode, copy=False), pixels, grid_thw,
                                         self.config.vision.spatial_merge_size, self._item_keys(pixels, grid_thw))

    def _item_keys(self, pixels, grid_thw):
        """item_keys, hashed once for the same tensors (unchanged since): a generate's encoder cache and its
        prefix check both ask."""
        memo = self._keys_memo
        if memo is not None and memo[0]() is pixels and memo[1]() is grid_thw and memo[2] == (pixels._version,
                                                                                               grid_thw._version):
            return memo[3]
        keys = item_keys(pixels, grid_thw)
        self._keys_memo = (weakref.ref(pixels), weakref.ref(grid_thw), (pixels._version, grid_thw._version), keys)
        return keys

    def _grid_key(self, grid_thw) -> tuple:
        """The grids as a tuple. A grid on the device costs a read that waits for the device; the same tensor,
        unchanged since, is read once."""
        memo = self._grid_memo
        if memo is not None and memo[0]() is grid_thw and memo[1] == grid_thw._version:
            return memo[2]
        key = tuple(map(tuple, grid_thw.tolist()))
        if grid_thw.device.type != "cpu":
            self._grid_memo = (weakref.ref(grid_thw), grid_thw._version, key)
        return key

    def _encode(self, pixels, grid_thw, copy=True):
        """The compiled vision encoder; on GPU one CUDA graph per distinct set of grids (layout memoized).
        copy=False: the outputs may be the graph's own buffers, valid until the next encode (the feature cache
        copies each item out at once)."""
        key = self._grid_key(grid_thw)
        if sum(t * h * w for t, h, w in key) == self.config.vision.spatial_merge_size ** 2:
            # one merged token in all: Dynamo would specialize that size to 1 and recompile for every later image;
            # the image twice (two segments, each attending only to itself) gives the same features
            merged, levels = self._encode(pixels.repeat(2, 1), grid_thw.repeat(2, 1))
            return merged[:1], [x[:1] for x in levels]
        if key not in self._layouts:  # the reference's layout, its mask replaced by the frames' bounds
            grid_thw = torch.tensor(key, device=self.device)  # on the model's device, wherever the grid was
            cu = segment_bounds(grid_thw)
            self._layouts[key] = (*self.model.model.visual.positions_layout(grid_thw), cu, int(cu.diff().max()))
        layout = self._layouts[key]
        if not self.cuda_graphs:
            return self._vision(*layout, pixels.to(self.device, self.dtype))
        if ("vision", key) not in self.graphs.inputs:  # the graph's input buffer: made from the first call's
            pixels = pixels.to(self.device, self.dtype)
        # later calls copy (and cast) the pixels straight into that buffer: one kernel
        merged, levels = self.graphs.run_static(("vision", key), self._vision, *layout, pixels=pixels)
        return (merged.clone(), [x.clone() for x in levels]) if copy else (merged, levels)
