"""Qwen3-VL preprocessing with pillow + torch: images, videos (lists of frames) and prompts.

Matches transformers' PIL image processor (Qwen2VLImageProcessorPil / 4.57's slow Qwen2VLImageProcessor)
configured as Qwen3-VL ships it: patch 16, merge 2, temporal patch 2, mean = std = 0.5, BICUBIC resize.
"""
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, InputTypeError

PATCH, MERGE, TEMPORAL = 16, 2, 2
MEAN = STD = 0.5
IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 64 * 32 * 32, 16384 * 32 * 32   # preprocessor_config.json of Qwen3-VL
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 32 * 32, 768 * 32 * 32


def smart_resize(height, width, factor=PATCH * MERGE, min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS,
                 num_frames=1):
    """Target (h, w): multiples of factor, aspect ratio kept, num_frames * h * w within the pixel bounds."""
    if min(height, width) < 1:
        raise InputError(f"image has an empty side: {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise InputError(f"absolute aspect ratio must be smaller than 200, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = num_frames if num_frames == 1 else round(num_frames / TEMPORAL) * TEMPORAL
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def as_image(x, name="image"):
    """A PIL image from a PIL image, a file path or an HxWx3 / HxW uint8 array."""
    if isinstance(x, Image.Image):
        return x
    if isinstance(x, (str, Path)):
        if not Path(x).is_file():
            raise InputError(f"{name}: no image file at {str(x)!r}")
        with Image.open(x) as img:
            img.load()
            return img.copy()
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4))):
        return Image.fromarray(x)
    raise InputTypeError(f"{name} must be a PIL image, a file path or an HxWx3 uint8 array, got {type(x).__name__}")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (as transformers 5.x does)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    return image.convert("RGB")


def _to_tensor(image: Image.Image, size):
    """RGB, BICUBIC resize to (h, w), scale to [0, 1], normalize -> [3, h, w] fp32."""
    h, w = size
    image = to_rgb(image).resize((w, h), resample=Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return normalize(x)


def normalize(x):
    """uint8 levels (as floats) -> the model's input scale: [0, 255] to [0, 1], then (x - mean) / std."""
    return (x * (1 / 255) - MEAN) / STD


def _patchify(frames):
    """frames: [T, 3, H, W] (T a multiple of the temporal patch) -> ([T/2 * h * w, 1536], (T/2, h, w)).

    Rows come in merge-block order: (t, block_row, block_col, in_row, in_col); each row is
    (channel, temporal, patch_row, patch_col) flattened, the layout PatchEmbed's Conv3d expects.
    """
    t, c, hh, ww = frames.shape
    gt, gh, gw = t // TEMPORAL, hh // PATCH, ww // PATCH
    x = frames.view(gt, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # gt, bh, bw, mh, mw, c, tp, ph, pw
    return x.reshape(gt * gh * gw, c * TEMPORAL * PATCH * PATCH), (gt, gh, gw)


def process_images(images, min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS):
    """PIL images -> (pixel_values [sum t*h*w, 1536] fp32, image_grid_thw [n, 3] long).

    Each image is one temporal patch (the frame repeated twice), so t = 1.
    """
    if isinstance(images, Image.Image):
        images = [images]
    patches, grids = [], []
    for i, img in enumerate(images):
        img = as_image(img, f"images[{i}]")
        size = smart_resize(img.height, img.width, min_pixels=min_pixels, max_pixels=max_pixels)
        frame = _to_tensor(img, size)
        p, grid = _patchify(frame[None].expand(TEMPORAL, -1, -1, -1).contiguous())
        patches.append(p)
        grids.append(grid)
    return torch.cat(patches), torch.tensor(grids, dtype=torch.long)


def video_layout(frames, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS):
    """One video's frames checked (PIL images of one size) and the (h, w) they are resized to."""
    if len(frames) < 1:
        raise InputError("a video needs at least one frame")
    frames = [as_image(f, f"video frame {i}") for i, f in enumerate(frames)]
    sizes = {(f.height, f.width) for f in frames}
    if len(sizes) != 1:
        raise InputError(f"all frames of a video must have the same size, got {sorted(sizes)}")
    (h, w), = sizes
    if min(h, w) < PATCH * MERGE:  # transformers' video resize first scales tiny frames up to the factor
        scale = PATCH * MERGE / min(h, w)
        h, w = int(h * scale), int(w * scale)
    return frames, smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels,
                                num_frames=max(len(frames), TEMPORAL))


def process_video(frames, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS):
    """One video as a list of PIL frames (already sampled, same size) -> (pixel_values_videos, video_grid_thw [1, 3]).

    All frames share one resize; an odd frame count is padded by repeating the last frame.
    """
    frames, size = video_layout(frames, min_pixels, max_pixels)
    x = torch.stack([_to_tensor(f, size) for f in frames])
    if pad := -len(frames) % TEMPORAL:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    p, grid = _patchify(x)
    return p, torch.tensor([grid], dtype=torch.long)


def frame_timestamps(num_frames, fps):
    """Seconds shown before each temporal patch: the mean time of its two frames (Qwen3VLProcessor)."""
    idx = list(range(num_frames)) + [num_frames - 1] * (-num_frames % TEMPORAL)
    return [(idx[i] + idx[i + TEMPORAL - 1]) / 2 / fps for i in range(0, len(idx), TEMPORAL)]


def expand_placeholders(text, image_grid_thw=None, video_grid_thw=None, video_timestamps=None):
    """Replace each <|image_pad|> / <|video_pad|> (in order) by its token run.

    An image becomes t*h*w/4 image pads (inside the caller's <|vision_start|> ... <|vision_end|>); a video
    becomes, per temporal patch, "<x.x seconds><|vision_start|>" + pads + "<|vision_end|>" with the
    surrounding vision_start/end of the prompt removed, as Qwen3VLProcessor does.
    """
    def split(marker, grids):
        parts = text.split(marker)
        n = 0 if grids is None else len(grids)
        if len(parts) - 1 != n:
            raise InputError(f"prompt has {len(parts) - 1} {marker} markers but {n} grids were given")
        return parts

    parts = split("<|image_pad|>", image_grid_thw)
    text = parts[0]
    for i, part in enumerate(parts[1:]):
        text += "<|image_pad|>" * (int(image_grid_thw[i].prod()) // MERGE ** 2) + part
    parts = split("<|video_pad|>", video_grid_thw)
    text = parts[0]
    for i, part in enumerate(parts[1:]):
        t, h, w = (int(v) for v in video_grid_thw[i])
        stamps = video_timestamps[i] if video_timestamps is not None else [float(j) for j in range(t)]
        if len(stamps) != t:
            raise InputError(f"video {i} has {t} temporal patches but {len(stamps)} timestamps")
        frames = "".join(f"<{s:.1f} seconds><|vision_start|>" + "<|video_pad|>" * (h * w // MERGE ** 2)
                         + "<|vision_end|>" for s in stamps)
        text = text.removesuffix("<|vision_start|>") + frames + part.removeprefix("<|vision_end|>")
    return text
