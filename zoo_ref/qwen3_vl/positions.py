"""3-row (T, H, W) M-RoPE positions from the placeholder tokens in input_ids (transformers' get_rope_index)."""
from itertools import groupby

import torch

from ..errors import InputError
from .config import Qwen3VLConfig


def mrope_positions(input_ids, config: Qwen3VLConfig, image_grid_thw=None, video_grid_thw=None,
                    attention_mask=None):
    """input_ids: [B, T] -> (positions [3, B, T] long, rope_deltas [B] long).

    Text tokens count up on all three rows. A visual run with LLM grid (t, h, w) = grid / merge takes
    T = off + t_idx, H = off + row, W = off + col; the next text starts at off + max(h, w). Videos are
    split into frames (t = 1 each; timestamps between frames are text). Padding (attention_mask == 0)
    gets position 0 and is skipped. rope_delta = max position + 1 - number of valid tokens.
    """
    m = config.vision.spatial_merge_size
    b, t = input_ids.shape
    images = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    frames = iter([[1, h, w] for tt, h, w in (video_grid_thw.tolist() if video_grid_thw is not None else [])
                   for _ in range(tt)])
    kind_of = {config.image_token_id: "image", config.video_token_id: "video"}
    positions = torch.zeros(3, b, t, dtype=torch.long)
    deltas = torch.zeros(b, dtype=torch.long)
    for row in range(b):
        valid = torch.ones(t, dtype=torch.bool) if attention_mask is None else attention_mask[row].bool().cpu()
        ids = input_ids[row].cpu()[valid].tolist()
        chunks, cur = [], 0
        for kind, run in groupby(ids, key=lambda x: kind_of.get(x, "text")):
            n = len(list(run))
            if kind == "text":
                chunks.append(torch.arange(n).expand(3, n) + cur)
                cur += n
                continue
            while n > 0:  # consume whole images / frames from the run
                grid = next(images if kind == "image" else frames, None)
                if grid is None:
                    raise InputError(f"row {row}: more {kind} placeholder tokens than {kind} grids describe")
                gt, gh, gw = grid[0], grid[1] // m, grid[2] // m
                need = gt * gh * gw
                if need > n:
                    raise InputError(f"row {row}: a run of {n} {kind} placeholder tokens is shorter than the next "
                                     f"{kind}'s {need} tokens (grid {grid})")
                tt, hh, ww = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")
                chunks.append(torch.stack([tt, hh, ww]).reshape(3, -1) + cur)
                cur += max(gh, gw)
                n -= need
        pos = torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long)
        positions[:, row, valid] = pos
        deltas[row] = (pos.max() + 1 - len(ids)) if len(ids) else 0
    for kind, rest in (("image", images), ("video frame", frames)):
        if next(rest, None) is not None:
            raise InputError(f"more {kind} grids than {kind} placeholder runs in input_ids")
    return positions.to(input_ids.device), deltas.to(input_ids.device)
