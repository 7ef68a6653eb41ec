"""Qwen3VLForConditionalGeneration: vision encoder + text decoder + tied lm_head, HF state_dict keys."""
import torch
from torch import nn

from ..checkpoint import Pretrained
from ..decoder import causal_mask
from ..errors import InputError, InputTypeError
from ..generation import generate
from ..inputs import INTEGER, check_tokens
from .config import Qwen3VLConfig
from .positions import mrope_positions
from .text import TextModel
from .vision import VisionModel


class Qwen3VLModel(nn.Module):  # the "model." prefix of the checkpoint keys
    def __init__(self, config: Qwen3VLConfig):
        super().__init__()
        self.visual = VisionModel(config.vision)
        self.language_model = TextModel(config.text)


class Qwen3VLForConditionalGeneration(Pretrained, nn.Module):
    config_class = Qwen3VLConfig

    def __init__(self, config: Qwen3VLConfig):
        super().__init__()
        self.config = config
        self.model = Qwen3VLModel(config)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight

    @property
    def text_config(self):
        return self.config.text

    @property
    def decoder(self):
        return self.model.language_model

    @property
    def banned_token_ids(self):
        """Placeholders are input-only: a generated one could not be fed back (it would claim visual features
        that do not exist)."""
        return (self.config.image_token_id, self.config.video_token_id)

    # ---------------------------------------------------------------- inputs
    def _check_visual(self, kind, pixels, grid, input_ids):
        c, name = self.config.vision, ("pixel_values" if kind == "image" else "pixel_values_videos")
        grid_name = f"{kind}_grid_thw"
        if grid is None:
            raise InputError(f"{name} given without {grid_name}")
        for arg, value in ((name, pixels), (grid_name, grid)):
            if not isinstance(value, torch.Tensor):
                raise InputTypeError(f"{arg} must be a torch.Tensor, got {type(value).__name__}")
        if grid.dtype not in INTEGER:
            raise InputTypeError(f"{grid_name} must hold integers (t, h, w in patches), got {grid.dtype}")
        if not pixels.is_floating_point():
            raise InputTypeError(f"{name} must be a floating-point tensor (normalized pixels), got {pixels.dtype}")
        if grid.ndim != 2 or grid.shape[1] != 3:
            raise InputError(f"{grid_name} must be [num_{kind}s, 3] (t, h, w), got {tuple(grid.shape)}")
        m = c.spatial_merge_size
        for i, (t, h, w) in enumerate(grid.tolist()):
            if t < 1 or h % m or w % m or h < m or w < m:
                raise InputError(f"{grid_name}[{i}] = ({t}, {h}, {w}): h and w must be positive multiples of "
                                 f"spatial_merge_size {m} and t >= 1")
        if pixels.ndim != 2 or pixels.shape[1] != c.patch_dim:
            raise InputError(f"{name} must be [num_patches, {c.patch_dim}] (channels * temporal_patch * patch^2), "
                             f"got {tuple(pixels.shape)}")
        n_patches = int(grid.prod(-1).sum())
        if pixels.shape[0] != n_patches:
            raise InputError(f"{name} has {pixels.shape[0]} patches but {grid_name} describes {n_patches}")
        if not bool(torch.isfinite(pixels).all()):  # a NaN here would reach every later call's cached keys
            raise InputError(f"{name} holds NaN or infinite values")
        token = self.config.image_token_id if kind == "image" else self.config.video_token_id
        n_tokens, n_features = int((input_ids == token).sum()), n_patches // m ** 2
        if n_tokens != n_features:
            raise InputError(f"{kind} token count mismatch: input_ids hold {n_tokens} {kind} placeholder tokens "
                             f"but the {kind}s give {n_features} features")

    def embed(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
              video_grid_thw=None, vision=None):
        """-> (embeddings [B, T, hidden], deepstack per level [B, T, hidden], zero outside visual positions).
        vision: the encoder to use (default self.model.visual), e.g. a compiled one."""
        x = self.model.language_model.embed_tokens(input_ids)
        visual_mask, deepstack = None, []
        for kind, pixels, grid, token in (
                ("image", pixel_values, image_grid_thw, self.config.image_token_id),
                ("video", pixel_values_videos, video_grid_thw, self.config.video_token_id)):
            if pixels is None:
                if grid is not None:
                    raise InputError(f"{kind}_grid_thw given without pixel values")
                continue
            self._check_visual(kind, pixels, grid, input_ids)
            feats, levels = (vision or self.model.visual)(pixels, grid)
            mask = input_ids == token
            x = x.index_put((mask,), feats.to(x.dtype))
            if visual_mask is None:
                visual_mask, deepstack = mask, levels
            else:  # images and videos both present: merge per level in sequence order
                both = visual_mask | mask
                merged = []
                for old, new in zip(deepstack, levels):
                    joint = new.new_zeros(int(both.sum()), new.shape[-1])
                    joint[visual_mask[both]] = old
                    joint[mask[both]] = new
                    merged.append(joint)
                visual_mask, deepstack = both, merged
        if visual_mask is not None:  # scatter each level to the sequence layout
            deepstack = [torch.zeros_like(x).index_put((visual_mask,), level.to(x.dtype)) for level in deepstack]
        return x, deepstack

    def rope_positions(self, input_ids, valid, image_grid_thw=None, video_grid_thw=None, **_):
        """M-RoPE positions [3, B, T] and each row's next position [B] (continues on all three rows)."""
        positions, deltas = mrope_positions(input_ids, self.config, image_grid_thw, video_grid_thw, valid)
        return positions, valid.sum(-1) + deltas

    def decode_positions(self, next_pos):  # [B] -> [3, B, 1]
        return next_pos.view(1, -1, 1).expand(3, -1, 1)

    # ---------------------------------------------------------------- forward
    def decode_hidden(self, x, positions, mask, deepstack=(), caches=None, cache_pos=None, layer_fn=None):
        return self.lm_head(self.model.language_model(x, positions, mask, deepstack, caches, cache_pos, layer_fn))

    def forward(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                video_grid_thw=None, attention_mask=None):
        """Full-sequence logits [B, T, vocab]. attention_mask: [B, T] (1 = token, 0 = padding)."""
        valid = check_tokens(input_ids, attention_mask, self.config.text.vocab_size)
        x, deepstack = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
        t = input_ids.shape[1]
        positions, _ = self.rope_positions(input_ids, valid, image_grid_thw, video_grid_thw)
        mask = causal_mask(valid, torch.arange(t, device=input_ids.device))
        return self.decode_hidden(x, positions, mask, deepstack)

    def generate(self, input_ids, **kwargs):
        """Static-cache generation; see `zoo_ref.generation.generate` for the arguments (plus pixel_values,
        image_grid_thw, pixel_values_videos, video_grid_thw)."""
        return generate(self, input_ids, **kwargs)
