"""A text-only causal LM over the shared decoder (Qwen3, Qwen2): 1-D RoPE, lm_head (tied or not), HF keys.

The methods below are the interface generation (zoo_ref.generation) and zoo's runtime use; Qwen3-VL offers the
same ones with its own embedding (vision) and positions (M-RoPE).
"""
import torch
from torch import nn

from .checkpoint import Pretrained
from .decoder import DecoderConfig, DecoderModel, causal_mask
from .generation import generate
from .inputs import check_tokens
from .rope import Rotary


class CausalLM(Pretrained, nn.Module):
    config_class = DecoderConfig  # subclasses: a DecoderConfig with from_dict(config.json dict)
    banned_token_ids = ()  # token ids generation never chooses

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config, Rotary(config.head_dim, config.rope_theta, config.yarn))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def text_config(self) -> DecoderConfig:
        return self.config

    @property
    def decoder(self) -> DecoderModel:
        return self.model

    # ---------------------------------------------------------------- the generation interface
    def embed(self, input_ids):
        """-> (embeddings [B, T, hidden], deepstack levels: none for text models)."""
        return self.model.embed_tokens(input_ids), []

    def rope_positions(self, input_ids, valid):
        """Positions count valid tokens only (left padding skipped) -> ([B, T], next position [B])."""
        return (valid.long().cumsum(-1) - 1).clamp(min=0), valid.sum(-1)

    def decode_positions(self, next_pos):  # [B] -> [B, 1]
        return next_pos[:, None]

    def decode_hidden(self, x, positions, mask, deepstack=(), caches=None, cache_pos=None, layer_fn=None):
        return self.lm_head(self.model(x, positions, mask, deepstack, caches, cache_pos, layer_fn))

    # ---------------------------------------------------------------- public API
    def forward(self, input_ids, attention_mask=None):
        """Full-sequence logits [B, T, vocab]. attention_mask: [B, T] (1 = token, 0 = left padding)."""
        valid = check_tokens(input_ids, attention_mask, self.config.vocab_size)
        t = input_ids.shape[1]
        x, _ = self.embed(input_ids)
        positions, _ = self.rope_positions(input_ids, valid)
        return self.decode_hidden(x, positions, causal_mask(valid, torch.arange(t, device=input_ids.device)))

    def generate(self, input_ids, **kwargs):
        """Static-cache generation; see `zoo_ref.generation.generate` for the arguments."""
        return generate(self, input_ids, **kwargs)
