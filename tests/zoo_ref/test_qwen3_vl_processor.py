"""Preprocessing vs transformers' PIL image processor; video and prompt expansion properties."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.strategies import TRANSFORMERS_5
from zoo_ref.qwen3_vl import expand_placeholders, frame_timestamps, process_images, process_video


def hf_image_processor(min_pixels, max_pixels):
    kw = dict(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
              min_pixels=min_pixels, max_pixels=max_pixels)
    if TRANSFORMERS_5:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        return Qwen2VLImageProcessorPil(**kw)
    from transformers import Qwen2VLImageProcessor
    return Qwen2VLImageProcessor(**kw)


@st.composite
def pil_images(draw, max_side=700):
    extreme = draw(st.booleans())
    if extreme:  # very long and thin, up to the 200:1 limit
        short = draw(st.integers(1, 8))
        long = draw(st.integers(short * 20, short * 199))
        h, w = (short, long) if draw(st.booleans()) else (long, short)
    else:
        h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2 ** 31))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA"]))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, {"RGB": 3, "L": 1, "RGBA": 4}[mode]), np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode)


@settings(max_examples=60)
@given(images=st.lists(pil_images(), min_size=1, max_size=3),
       min_pixels=st.sampled_from([32 * 32, 64 * 32 * 32, 100 * 32 * 32]),
       max_pixels=st.sampled_from([128 * 32 * 32, 300 * 32 * 32, 16384 * 32 * 32]))
def test_images_match_transformers(images, min_pixels, max_pixels):
    try:
        ref = hf_image_processor(min_pixels, max_pixels)(images=images, return_tensors="pt")
    except ValueError as e:  # transformers refuses (aspect ratio > 200): so must we, with the same reason
        with pytest.raises(ValueError, match="aspect ratio"):
            process_images(images, min_pixels=min_pixels, max_pixels=max_pixels)
        assert "aspect ratio" in str(e)
        return
    pixel_values, grid = process_images(images, min_pixels=min_pixels, max_pixels=max_pixels)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert pixel_values.shape == ref["pixel_values"].shape
    torch.testing.assert_close(pixel_values, ref["pixel_values"].float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 201), (300, 1)])
def test_refuses_what_transformers_refuses(size):
    image = Image.new("RGB", (size[1], size[0]))
    with pytest.raises(ValueError, match="aspect ratio"):
        hf_image_processor(32 * 32, 16384 * 32 * 32)(images=[image], return_tensors="pt")
    with pytest.raises(ValueError, match="aspect ratio"):
        process_images([image])


@settings(max_examples=20)
@given(image=pil_images(max_side=200), n_frames=st.integers(1, 5))
def test_video_of_a_still_frame_equals_the_image(image, n_frames):
    """A video whose frames are all one image patchifies like that image, once per temporal patch."""
    bounds = dict(min_pixels=32 * 32, max_pixels=4096 * 32 * 32)
    if min(image.size) < 32:
        image = image.resize((max(image.width, 32), max(image.height, 32)))
    video, vgrid = process_video([image] * n_frames, **bounds)
    pix, grid = process_images([image], **bounds)
    t = (n_frames + 1) // 2
    assert vgrid.tolist() == [[t, *grid[0, 1:].tolist()]]
    torch.testing.assert_close(video, pix.repeat(t, 1))


def test_video_frames_pair_in_time():
    """Temporal patch k holds frames 2k and 2k+1 (the odd last frame repeated)."""
    frames = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(3)]
    video, grid = process_video(frames, min_pixels=32 * 32, max_pixels=64 * 64 * 3)
    assert grid.tolist() == [[2, 4, 4]]
    red = video.view(2, 16, 3, 2, 16, 16)[:, :, 0, :, 0, 0]  # [t, patch, temporal] red channel
    expected = torch.tensor([[0, 40], [80, 80]]) / 255 * 2 - 1
    torch.testing.assert_close(red, expected[:, None, :].expand(2, 16, 2), rtol=0, atol=1e-6)
    assert frame_timestamps(3, fps=2.0) == [0.25, 1.0]


def test_expand_placeholders_counts():
    text = "<|vision_start|><|image_pad|><|vision_end|>a<|vision_start|><|video_pad|><|vision_end|>b"
    out = expand_placeholders(text, torch.tensor([[1, 4, 6]]), torch.tensor([[2, 2, 4]]), [[0.5, 1.5]])
    assert out.count("<|image_pad|>") == 6
    assert out.count("<|video_pad|>") == 4
    assert "<0.5 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|><1.5 seconds>" in out
    assert out.endswith("<|vision_end|>b") and out.count("<|vision_start|>") == 3
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> markers but 2 grids"):
        expand_placeholders(text, torch.tensor([[1, 4, 6], [1, 2, 2]]), torch.tensor([[2, 2, 4]]))
