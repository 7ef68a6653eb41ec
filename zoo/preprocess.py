"""Qwen3-VL preprocessing on torch (CPU or GPU): the same contract as zoo_ref.qwen3_vl.process_images /
process_video, built for speed.

What the reference does with PIL and three full-size float copies (normalize, repeat the frame for the temporal
patch, reorder into patches), this does with the image's uint8 bytes moved once (to `device`), normalized at
frame size, and one copy that repeats and reorders together. Without a resize (sides already multiples of 32 within
the pixel bounds) the values are the reference's bit for bit; a resize is torch's antialiased bicubic
(`interpolate(..., antialias=True)`, rounded to uint8 levels like PIL's), which differs from PIL's by at most a few
levels at a few pixels: tests/zoo/test_preprocess.py states the bound. On the H100's host (bench/RESULTS.md) a
1792x1792 image takes 8.0 ms on the GPU path against the reference's 59.7 ms.

Several images overlap: worker threads decode and convert the next images (PIL releases the GIL while it decodes)
while this thread queues the device work for the ones ready.
"""
import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from zoo_ref.qwen3_vl import processor as ref
from zoo_ref.qwen3_vl.processor import MERGE, PATCH, TEMPORAL, as_image, smart_resize, to_rgb


def _uint8(image) -> torch.Tensor:
    """PIL image -> [H, W, 3] uint8 (RGB, alpha over white like the reference)."""
    return torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8))


def _frames(x, size):
    """x: [T, H, W, 3] uint8 -> [T, h, w, 3] normalized fp32, resized to size = (h, w) if it differs."""
    if tuple(x.shape[1:3]) == tuple(size):
        y = x.float()
    else:  # interpolate takes [T, 3, H, W]; channels-last memory keeps [T, h, w, 3] a free view afterwards
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=size, mode="bicubic", antialias=True,
                          align_corners=False)
        y = y.round_().clamp_(0, 255).permute(0, 2, 3, 1).contiguous()
    return ref.normalize(y)  # the reference's arithmetic, op for op


def _patchify(frames, repeat: bool):
    """frames: [T, h, w, 3] -> ([T' * gh * gw, 1536], (T', gh, gw)) in the reference's row and column order; with
    repeat, one frame is both halves of its temporal patch (images). One copy."""
    t, hh, ww, c = frames.shape
    gh, gw = hh // PATCH, ww // PATCH
    x = frames.view(t if repeat else t // TEMPORAL, 1 if repeat else TEMPORAL, gh // MERGE, MERGE, PATCH,
                    gw // MERGE, MERGE, PATCH, c)
    if repeat:
        x = x.expand(-1, TEMPORAL, *x.shape[2:])
    gt = x.shape[0]
    x = x.permute(0, 2, 5, 3, 6, 8, 1, 4, 7)  # gt, bh, bw, mh, mw, c, tp, ph, pw
    return x.reshape(gt * gh * gw, c * TEMPORAL * PATCH * PATCH), (gt, gh, gw)


def _host_image(item, min_pixels, max_pixels):
    """(index, image) -> ([H, W, 3] uint8, target (h, w)): the host's share (open, decode, convert), thread-safe."""
    i, img = item
    img = as_image(img, f"images[{i}]")
    size = smart_resize(img.height, img.width, min_pixels=min_pixels, max_pixels=max_pixels)
    return _uint8(img), size


def process_images(images, device=None, min_pixels=ref.IMAGE_MIN_PIXELS, max_pixels=ref.IMAGE_MAX_PIXELS,
                   workers=None):
    """PIL images (paths, uint8 arrays) -> (pixel_values [sum t*h*w, 1536] fp32 on `device`, image_grid_thw [n, 3]).

    workers: threads decoding images ahead of the device work (default: up to 8, one per image; 1 = in turn)."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    workers = workers or min(len(images), 8, os.cpu_count() or 1)
    host = functools.partial(_host_image, min_pixels=min_pixels, max_pixels=max_pixels)
    patches, grids = [], []
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        ready = pool.map(host, enumerate(images)) if pool else map(host, enumerate(images))  # in order
        for x, size in ready:
            p, grid = _patchify(_frames(x.to(device, non_blocking=True)[None], size), repeat=True)
            patches.append(p)
            grids.append(grid)
    return torch.cat(patches), torch.tensor(grids, dtype=torch.long)


def process_video(frames, device=None, min_pixels=ref.VIDEO_MIN_PIXELS, max_pixels=ref.VIDEO_MAX_PIXELS):
    """One video (a list of same-size frames) -> (pixel_values_videos on `device`, video_grid_thw [1, 3])."""
    frames, size = ref.video_layout(frames, min_pixels, max_pixels)
    x = torch.stack([_uint8(f) for f in frames]).to(device, non_blocking=True)
    y = _frames(x, size)
    if pad := -len(frames) % TEMPORAL:
        y = torch.cat([y, y[-1:].expand(pad, -1, -1, -1)])
    p, grid = _patchify(y, repeat=False)
    return p, torch.tensor([grid], dtype=torch.long)


class Processor:
    """This module's preprocessing bound to a device, for build_inputs(..., processor=Processor("cuda"))."""

    def __init__(self, device=None):
        self.device = device

    def process_images(self, images, **pixel_bounds):
        return process_images(images, self.device, **pixel_bounds)

    def process_video(self, frames, **pixel_bounds):
        return process_video(frames, self.device, **pixel_bounds)
