"""Tiny Qwen3-VL checkpoints (random weights, real key names) and a tiny tokenizer, for tests and the demo."""
import json
import string
from pathlib import Path

import torch

from ..checkpoint import write_checkpoint as _write

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
CHARS = sorted(set(string.printable) - set("\x0b\x0c\r"))
TINY_VOCAB = len(SPECIALS) + len(CHARS)  # 104


def tiny_config_dict(vocab_size=TINY_VOCAB, hidden=64, layers=3, heads=4, kv_heads=2, head_dim=16,
                     mrope_section=(4, 2, 2), v_hidden=32, v_depth=3, v_heads=2, v_intermediate=64, patch=16,
                     merge=2, temporal=2, deepstack=(0, 1), pos_side=6, intermediate=128, tie=True,
                     spelling="5.x"):
    """A Qwen3-VL config.json dict at toy size. spelling: "5.x" (rope_parameters) or "4.57" (rope_scaling)."""
    rope = {"rope_type": "default", "mrope_section": list(mrope_section), "mrope_interleaved": True}
    text = {"model_type": "qwen3_vl_text", "vocab_size": vocab_size, "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim, "hidden_act": "silu", "rms_norm_eps": 1e-6,
            "max_position_embeddings": 4096, "attention_bias": False, "tie_word_embeddings": tie,
            "eos_token_id": 2, "pad_token_id": 0, "bos_token_id": 1}
    if spelling == "4.57":
        text.update(rope_theta=5e6, rope_scaling=rope)
    else:
        text["rope_parameters"] = {**rope, "rope_theta": 5e6}
    vision = {"model_type": "qwen3_vl", "depth": v_depth, "hidden_size": v_hidden, "intermediate_size": v_intermediate,
              "num_heads": v_heads, "in_channels": 3, "patch_size": patch, "temporal_patch_size": temporal,
              "spatial_merge_size": merge, "out_hidden_size": hidden, "num_position_embeddings": pos_side ** 2,
              "deepstack_visual_indexes": list(deepstack), "hidden_act": "gelu_pytorch_tanh"}
    return {"model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"],
            "text_config": text, "vision_config": vision, "image_token_id": 5, "video_token_id": 6,
            "vision_start_token_id": 3, "vision_end_token_id": 4, "tie_word_embeddings": tie}


def randomize_(model: torch.nn.Module, seed: int = 0):
    """Fill every parameter with seeded random values of a sane scale (norm weights around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32, device="cpu")
            if p.ndim == 1:
                is_norm_weight = "norm" in name and name.endswith("weight")
                p.copy_(1 + 0.2 * r if is_norm_weight else 0.1 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model


# Qwen3-VL's chat template, reduced to what the tiny tokenizer can spell: system / user / assistant turns with
# string content or text / image / video parts, and the assistant prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


def write_tokenizer(path):
    """A character-level tokenizer with Qwen's special tokens, saved so AutoTokenizer can load it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "model_max_length": 4096, "chat_template": CHAT_TEMPLATE}))


def write_checkpoint(path, config_dict: dict, state_dict: dict, max_shard_bytes: int | None = None):
    """config.json + safetensors (sharded with an index when max_shard_bytes is given). Tied lm_head dropped."""
    return _write(path, config_dict, state_dict, max_shard_bytes,
                  drop=("lm_head.weight",) if config_dict.get("tie_word_embeddings") else ())


def make_tiny_checkpoint(path, seed=0, max_shard_bytes=None, **config_overrides):
    """Write a complete tiny checkpoint directory (config, weights, tokenizer). Returns its path."""
    from .config import Qwen3VLConfig
    from .model import Qwen3VLForConditionalGeneration
    d = tiny_config_dict(**config_overrides)
    torch.manual_seed(seed)
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(d)), seed)
    write_checkpoint(path, d, model.state_dict(), max_shard_bytes)
    write_tokenizer(path)
    return Path(path)
