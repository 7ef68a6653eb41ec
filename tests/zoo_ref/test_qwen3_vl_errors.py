"""Bad input gets one clear error naming the problem."""
import pytest
import torch

from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import TINY_VOCAB, randomize_, tiny_config_dict


@pytest.fixture(scope="module")
def model():
    return randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(tiny_config_dict()))).eval()


def image_inputs(n_tokens=6, grid=(1, 4, 6)):
    ids = torch.tensor([[1, 9, 3] + [5] * n_tokens + [4, 10]])
    return ids, torch.randn(grid[0] * grid[1] * grid[2], 3 * 2 * 16 * 16), torch.tensor([grid])


def test_good_input_runs(model):
    ids, pix, grid = image_inputs()
    assert model(ids, pixel_values=pix, image_grid_thw=grid).shape == (1, ids.shape[1], TINY_VOCAB)


def test_token_feature_mismatch(model):
    ids, pix, grid = image_inputs(n_tokens=5)
    with pytest.raises(ValueError, match="image token count mismatch: input_ids hold 5 image placeholder tokens "
                                         "but the images give 6 features"):
        model(ids, pixel_values=pix, image_grid_thw=grid)


def test_grid_not_divisible_by_merge(model):
    ids, pix, grid = image_inputs(grid=(1, 3, 8))
    with pytest.raises(ValueError, match=r"image_grid_thw\[0\] = \(1, 3, 8\): h and w must be positive multiples "
                                         "of spatial_merge_size 2"):
        model(ids, pixel_values=pix, image_grid_thw=grid)


def test_wrong_pixel_width(model):
    ids, pix, grid = image_inputs()
    with pytest.raises(ValueError, match=r"pixel_values must be \[num_patches, 1536\].*got \(24, 768\)"):
        model(ids, pixel_values=pix[:, :768], image_grid_thw=grid)


def test_patch_count_vs_grid(model):
    ids, pix, grid = image_inputs()
    with pytest.raises(ValueError, match="pixel_values has 20 patches but image_grid_thw describes 24"):
        model(ids, pixel_values=pix[:20], image_grid_thw=grid)


def test_pixels_without_grid_and_video_mismatch(model):
    ids, pix, grid = image_inputs()
    with pytest.raises(ValueError, match="pixel_values given without image_grid_thw"):
        model(ids, pixel_values=pix)
    vids = torch.tensor([[1, 3] + [6] * 5 + [4]])
    with pytest.raises(ValueError, match="video token count mismatch: input_ids hold 5 video placeholder tokens "
                                         "but the videos give 6 features"):
        model(vids, pixel_values_videos=pix, video_grid_thw=grid)


def test_run_split_across_images_is_refused(model):
    """Token totals agree, but the first run is too short for the first image."""
    ids = torch.tensor([[1, 3] + [5] * 2 + [4, 3] + [5] * 10 + [4]])
    pix = torch.randn(48, 1536)
    with pytest.raises(ValueError, match="a run of 2 image placeholder tokens is shorter than the next image's 6"):
        model(ids, pixel_values=pix, image_grid_thw=torch.tensor([[1, 4, 6], [1, 4, 6]]))
