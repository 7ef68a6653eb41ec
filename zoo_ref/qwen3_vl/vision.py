"""Qwen3-VL vision encoder: Conv3d patches + interpolated learned positions + 2D RoPE ViT + mergers.

Patches arrive flattened in 2x2 merge-block order (see processor.py), so four consecutive rows of the
encoder's output are one LLM token; the mergers just view(-1, 4 * hidden).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import activation, apply_rotary, attention, inv_freq
from .config import VisionConfig


class PatchEmbed(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.c = c
        kernel = (c.temporal_patch_size, c.patch_size, c.patch_size)
        self.proj = nn.Conv3d(c.in_channels, c.hidden_size, kernel_size=kernel, stride=kernel, bias=True)

    def forward(self, pixels):  # pixels: [N, C*Tp*P*P] -> [N, hidden]
        # The Conv3d (kept for its checkpoint keys) meets each patch once: its kernel is the whole patch, so it is the
        # linear map of the flattened patch (same C, Tp, P, P order). Run as one: GPU convolution picks a generic
        # kernel for this shape, 30x slower than the matmul (255 vs 8 us for 784 patches on an H200).
        w = self.proj.weight.flatten(1)  # [hidden, C*Tp*P*P]
        return F.linear(pixels.reshape(-1, w.shape[1]).to(w.dtype), w, self.proj.bias)


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.num_heads, self.head_dim = c.num_heads, c.head_dim
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size, bias=True)
        self.proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)

    def forward(self, x, cos, sin, mask):  # x: [N, hidden]; cos/sin: [N, 1, Dh] fp32; mask: [1, 1, N, N]
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, self.head_dim).unbind(1)  # [N, H, Dh] each
        q, k = apply_rotary(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, N, Dh]
        out = attention(q, k, v, mask, self.head_dim ** -0.5)
        return self.proj(out[0].transpose(0, 1).reshape(n, -1))


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.linear_fc1 = nn.Linear(c.hidden_size, c.intermediate_size, bias=True)
        self.linear_fc2 = nn.Linear(c.intermediate_size, c.hidden_size, bias=True)
        self.act = activation(c.hidden_act)

    def forward(self, x):
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=1e-6)
        self.attn = VisionAttention(c)
        self.mlp = VisionMLP(c)

    def forward(self, x, cos, sin, mask):
        x, mlp_out = self.parts(x, cos, sin, mask)
        return x + mlp_out

    def parts(self, x, cos, sin, mask):
        """(the residual stream after attention, the MLP's output): the block's output is their sum (zoo.compile
        leaves that last add to the next block, where it fuses with the norm that reads it)."""
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x, self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """2x2 patches -> one LLM token. The main merger norms each patch; deepstack mergers norm the group."""

    def __init__(self, c: VisionConfig, norm_after_shuffle: bool):
        super().__init__()
        self.merged = c.hidden_size * c.spatial_merge_size ** 2
        self.norm_after_shuffle = norm_after_shuffle
        self.norm = nn.LayerNorm(self.merged if norm_after_shuffle else c.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.merged, self.merged)
        self.act_fn = nn.GELU()
        self.linear_fc2 = nn.Linear(self.merged, c.out_hidden_size)

    def forward(self, x):  # [N, hidden] -> [N / merge^2, out_hidden]
        x = self.norm(x.view(-1, self.merged)) if self.norm_after_shuffle else self.norm(x).view(-1, self.merged)
        return self.linear_fc2(self.act_fn(self.linear_fc1(x)))


class VisionRotary(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        # head_dim/2 rotary dims per axis -> head_dim/4 frequencies, shared by rows and columns
        self.register_buffer("inv_freq", inv_freq(c.head_dim // 2, c.rope_theta), persistent=False)

    def forward(self, rows, cols):  # rows/cols: [N] -> cos, sin: [N, 1, head_dim] fp32
        freqs = torch.cat([rows[:, None].float() * self.inv_freq, cols[:, None].float() * self.inv_freq], dim=-1)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
        return emb.cos(), emb.sin()


def patch_coordinates(grid_thw, merge: int):
    """(row, col) of every patch in merge-block order, each frame repeated t times. grid_thw: [n, 3] long."""
    rows, cols = [], []
    for t, h, w in grid_thw.tolist():
        r = torch.arange(h).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)
        c = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
        # (block_row, in_row, block_col, in_col) -> (block_row, block_col, in_row, in_col)
        rows.append(r.permute(0, 2, 1, 3).reshape(-1).repeat(t))
        cols.append(c.permute(0, 2, 1, 3).reshape(-1).repeat(t))
    return torch.cat(rows).to(grid_thw.device), torch.cat(cols).to(grid_thw.device)


def segment_bounds(grid_thw):
    """Where each frame (t slice) of each image/video starts in the patch sequence: cu_seqlens [frames + 1]."""
    lengths = (grid_thw[:, 1] * grid_thw[:, 2]).repeat_interleave(grid_thw[:, 0])
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def mask_of_segments(cu_seqlens, size: int):
    """Block-diagonal mask [1, 1, size, size] of the segments [cu[i], cu[i+1]): each attends only to itself."""
    seg = torch.searchsorted(cu_seqlens, torch.arange(size, device=cu_seqlens.device), right=True)
    return (seg[:, None] == seg[None, :])[None, None]


def segment_mask(grid_thw):
    """Block-diagonal mask [1, 1, N, N]: each frame (t slice) of each image/video attends only to itself."""
    cu = segment_bounds(grid_thw)
    return mask_of_segments(cu, int(cu[-1]))


class VisionModel(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.c = c
        self.side = int(round(c.num_position_embeddings ** 0.5))
        self.patch_embed = PatchEmbed(c)
        self.pos_embed = nn.Embedding(c.num_position_embeddings, c.hidden_size)
        self.rotary_pos_emb = VisionRotary(c)
        self.blocks = nn.ModuleList(VisionBlock(c) for _ in range(c.depth))
        self.merger = PatchMerger(c, norm_after_shuffle=False)
        self.deepstack_merger_list = nn.ModuleList(
            PatchMerger(c, norm_after_shuffle=True) for _ in c.deepstack_visual_indexes)

    def layout(self, grid_thw):
        """Everything that depends only on the grids (index math): patch rows/cols, the 4 bilinear taps and
        weights into the learned position table (align-corners resampling of side x side to each h x w),
        and the per-frame attention mask."""
        return (*self.positions_layout(grid_thw), segment_mask(grid_thw))

    def positions_layout(self, grid_thw):
        """layout() without the mask: rows, cols, taps, weights."""
        rows, cols = patch_coordinates(grid_thw, self.c.spatial_merge_size)
        hw = grid_thw[:, 1:].repeat_interleave(grid_thw.prod(-1), dim=0).float()  # [N, 2] (h, w) per patch

        def axis(coord, size):  # source coordinate linspace(0, side-1, size)[coord] -> (lo, hi, frac)
            src = coord.float() * (self.side - 1) / (size - 1).clamp(min=1)
            lo = src.floor()
            return lo.long(), (lo.long() + 1).clamp(max=self.side - 1), src - lo

        r0, r1, fr = axis(rows, hw[:, 0])
        c0, c1, fc = axis(cols, hw[:, 1])
        taps = torch.stack([r0 * self.side + c0, r0 * self.side + c1, r1 * self.side + c0, r1 * self.side + c1], 1)
        weights = torch.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], 1)  # [N, 4] fp32
        return rows, cols, taps, weights

    def forward(self, pixels, grid_thw):
        """pixels: [N, patch_dim]; grid_thw: [n, 3] -> (tokens [N/4, out], [deepstack_i [N/4, out]])."""
        return self.encode(pixels, *self.layout(grid_thw))

    def embed(self, pixels, rows, cols, taps, weights):
        """-> (x [N, hidden]: the patches' embedding plus their interpolated positions, cos, sin: the rotary tables)."""
        x = self.patch_embed(pixels)
        pos = (self.pos_embed(taps) * weights[:, :, None]).sum(1)  # bilinear mix of 4 table rows
        return x + pos.to(x.dtype), *self.rotary_pos_emb(rows, cols)

    def encode(self, pixels, rows, cols, taps, weights, mask, block_fn=None, embed_fn=None, merger_fn=None):
        """block_fn(block, x, cos, sin, mask): how one block runs (zoo.compile passes its compiled region, which
        takes `mask` in a form of its own: what it builds the mask from); embed_fn (self.embed's arguments) and
        merger_fn(merger, x) likewise for the embedding and the mergers."""
        block_fn = block_fn or (lambda block, *args: block(*args))
        merger_fn = merger_fn or (lambda merger, x: merger(x))
        x, cos, sin = (embed_fn or self.embed)(pixels, rows, cols, taps, weights)
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = block_fn(block, x, cos, sin, mask)
            if i in self.c.deepstack_visual_indexes:
                merger = self.deepstack_merger_list[self.c.deepstack_visual_indexes.index(i)]
                deepstack.append(merger_fn(merger, x))
        return merger_fn(self.merger, x), deepstack
