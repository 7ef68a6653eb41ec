"""zoo/preprocess.py (torch preprocessing, CPU or GPU) vs zoo_ref's PIL processor (which equals transformers'):
bit for bit when no resize is needed; with a resize, within the stated bound. On CPU here; ZOO_TEST_CUDA=1 runs the
same comparisons with the work on the GPU."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.preprocess import process_images as fast_images
from zoo.preprocess import process_video as fast_video
from zoo_ref.errors import InputError
from zoo_ref.qwen3_vl.processor import process_images, process_video, smart_resize

DEVICE = "cuda" if os.environ.get("ZOO_TEST_CUDA") else "cpu"
LEVEL = 2 / 255  # one uint8 level after normalization (mean = std = 0.5)


def picture(h, w, seed, smooth):
    """A random picture: smooth (a few gradients and blobs, like a photo) or per-pixel noise (the worst case)."""
    g = torch.Generator().manual_seed(seed)
    if smooth:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        c = torch.rand(3, 4, generator=g)
        x = torch.stack([c[i, 0] * yy + c[i, 1] * xx + c[i, 2] * torch.sin(6.28 * (c[i, 3] * 3 + 1) * (xx + yy))
                         for i in range(3)], -1)
        x = (x - x.min()) / (x.max() - x.min() + 1e-6)
    else:
        x = torch.rand(h, w, 3, generator=g)
    return Image.fromarray((x * 255).byte().numpy())


def compare(got, want, exact):
    (gp, gg), (wp, wg) = got, want
    assert torch.equal(gg, wg) and gp.shape == wp.shape and gp.device.type == DEVICE
    d = (gp.cpu() - wp).abs()
    if exact:
        assert torch.equal(gp.cpu(), wp)
        return d
    # the stated bound for resized inputs: on average at most half a level; beyond one level at most 2% of the values
    assert d.mean() <= LEVEL / 2 and (d > LEVEL * 1.001).float().mean() <= 0.02, (d.mean(), d.max())
    return d


@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 700), w=st.integers(8, 700), smooth=st.booleans(), seed=st.integers(0, 99))
def test_images_equal_the_reference(h, w, smooth, seed):
    img = picture(h, w, seed, smooth)
    exact = smart_resize(h, w) == (h, w)  # no resize needed
    compare(fast_images([img], device=DEVICE), process_images([img]), exact)


@pytest.mark.parametrize("size", [(448, 448), (1024, 768)])
def test_images_that_need_no_resize_are_bit_identical(size):
    imgs = [picture(*size, seed=1, smooth=False), picture(*size, seed=2, smooth=True)]
    compare(fast_images(imgs, device=DEVICE), process_images(imgs), exact=True)


def test_several_images_decoded_in_threads_equal_one_at_a_time(tmp_path):
    """A batch of image files of different sizes (decoded by worker threads, queued in order): the same values and
    grids as one image at a time and as the reference, and a bad item's error names its index."""
    imgs = [picture(224 + 32 * i, 256, seed=i, smooth=False) for i in range(5)] + [picture(50, 70, 7, True)]
    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    threaded, in_turn = fast_images(paths, device=DEVICE), fast_images(paths, device=DEVICE, workers=1)
    assert torch.equal(threaded[0], in_turn[0]) and torch.equal(threaded[1], in_turn[1])
    want = process_images(imgs[:5])
    n = int(want[1].prod(-1).sum())
    exact = all(smart_resize(img.height, img.width) == (img.height, img.width) for img in imgs[:5])
    compare((threaded[0][:n], threaded[1][:5]), want, exact)
    with pytest.raises(TypeError, match="images\\[2\\] must be a PIL image"):
        fast_images(paths[:2] + [3.5] + paths[2:], device=DEVICE)


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 5), h=st.integers(20, 300), w=st.integers(20, 300), seed=st.integers(0, 99))
def test_videos_equal_the_reference(n, h, w, seed):
    frames = [picture(h, w, seed + i, smooth=True) for i in range(n)]
    compare(fast_video(frames, device=DEVICE), process_video(frames), exact=False)


def test_errors_match_the_reference():
    with pytest.raises(InputError, match="at least one frame"):
        fast_video([])
    with pytest.raises(InputError, match="same size"):
        fast_video([picture(40, 40, 0, True), picture(40, 48, 0, True)])
    with pytest.raises(TypeError, match="images\\[0\\] must be a PIL image"):
        fast_images([3.5])


def test_build_inputs_with_the_torch_processor():
    """build_inputs(processor=Processor(device)) gives the reference's ids and grids, pixels on the device."""
    import tempfile

    from transformers import AutoTokenizer

    from zoo.preprocess import Processor
    from zoo_ref.qwen3_vl import build_inputs
    from zoo_ref.qwen3_vl.tiny import write_tokenizer
    with tempfile.TemporaryDirectory() as d:
        write_tokenizer(d)
        tok = AutoTokenizer.from_pretrained(d)
    conversation = [{"role": "user", "content": [{"type": "image", "image": picture(64, 96, 0, True)},
                                                 {"type": "video", "video": [picture(40, 40, i, True)
                                                                             for i in range(3)]},
                                                 {"type": "text", "text": "What is this?"}]}]
    want = build_inputs(tok, conversation)
    got = build_inputs(tok, conversation, processor=Processor(DEVICE))
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].device.type == (DEVICE if key.startswith("pixel_values") else "cpu"), key
        if key.startswith("pixel_values"):
            assert (got[key].cpu() - want[key]).abs().mean() <= LEVEL / 2, key
        else:
            assert torch.equal(got[key], want[key]), key
