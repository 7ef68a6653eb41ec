"""Checkpoint loading (sharded and not), config parsing, and clear errors on bad input."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.strategies import paired_models
from zoo_ref.checkpoint import CheckpointError
from zoo_ref.qwen3_vl import ConfigError, Qwen3VLConfig, Qwen3VLForConditionalGeneration, load_tokenizer
from zoo_ref.qwen3_vl.tiny import make_tiny_checkpoint, tiny_config_dict


@pytest.fixture(scope="module")
def hf_pair():
    return paired_models(tiny_config_dict(), seed=7)


@pytest.mark.parametrize("shard", ["20KB", None])
def test_round_trip_via_transformers_save_pretrained(tmp_path, hf_pair, shard):
    hf, ours = hf_pair
    kwargs = {"max_shard_size": shard} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert (len(files) > 3) == bool(shard), files
    loaded = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight


def test_from_pretrained_dtype(tmp_path):
    make_tiny_checkpoint(tmp_path, max_shard_bytes=30_000)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.language_model.rotary_emb.inv_freq.dtype == torch.float32  # rotary tables stay fp32
    tok = load_tokenizer(tmp_path)
    assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_missing_unexpected_misshaped_weights_listed(tmp_path):
    make_tiny_checkpoint(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.visual.blocks.0.attn.qkv.weight"]
    tensors["model.extra.weight"] = torch.zeros(2)
    tensors["model.language_model.norm.weight"] = torch.ones(5)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing (1): model.visual.blocks.0.attn.qkv.weight" in msg
    assert "unexpected (1): model.extra.weight" in msg
    assert "misshaped (1): model.language_model.norm.weight: checkpoint (5,) vs model (64,)" in msg


def test_untied_checkpoint_needs_lm_head(tmp_path):
    make_tiny_checkpoint(tmp_path, tie=False)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing \\(1\\): lm_head.weight"):
        Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)


def test_config_spellings_agree_and_errors():
    a = Qwen3VLConfig.from_dict(tiny_config_dict(spelling="5.x"))
    b = Qwen3VLConfig.from_dict(tiny_config_dict(spelling="4.57"))
    assert a == b
    assert Qwen3VLConfig.from_dict(a.to_dict()) == a
    with pytest.raises(ConfigError, match="expected model_type 'qwen3_vl', got 'llama'"):
        Qwen3VLConfig.from_dict({**tiny_config_dict(), "model_type": "llama"})
    bad = tiny_config_dict()
    del bad["text_config"]["num_hidden_layers"]
    with pytest.raises(ConfigError, match="text_config is missing required field\\(s\\): num_hidden_layers"):
        Qwen3VLConfig.from_dict(bad)
    bad = tiny_config_dict()
    bad["text_config"]["rope_parameters"]["rope_type"] = "yarn"
    with pytest.raises(ConfigError, match="unsupported text rope_type 'yarn'"):
        Qwen3VLConfig.from_dict(bad)


def test_real_2b_config_parses():
    from importlib.resources import files
    d = json.loads((files("zoo_ref") / "qwen3_vl/configs/qwen3-vl-2b-instruct.json").read_text())
    c = Qwen3VLConfig.from_dict(d)
    assert (c.text.num_hidden_layers, c.text.head_dim, c.vision.depth, c.vision.deepstack_visual_indexes) == \
        (28, 128, 24, [5, 11, 17])
