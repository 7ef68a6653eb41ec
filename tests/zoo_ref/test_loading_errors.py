"""Loading follows transformers' precedence and refuses ambiguity; every loading error names the file."""
import json

import pytest
import torch
from safetensors.torch import save_file

from tests.strategies import paired_dense
from zoo_ref.checkpoint import CheckpointError
from zoo_ref.qwen3 import Qwen3ForCausalLM

CONFIG = {"model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "tie_word_embeddings": True}


@pytest.fixture
def checkpoint(tmp_path):
    _, model = paired_dense(CONFIG, seed=0)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    return tmp_path, model


def test_a_single_file_wins_over_an_index(checkpoint):
    path, model = checkpoint
    state = {k: v * 0 + 0.5 for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(path / "model.safetensors"))  # beside the shards and their index, as transformers would
    loaded = Qwen3ForCausalLM.from_pretrained(path)
    assert all(torch.all(v == 0.5) for v in loaded.state_dict().values())


def test_the_same_tensor_in_two_shards_is_refused(checkpoint):
    path, model = checkpoint
    index = json.loads((path / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    save_file({"model.norm.weight": model.model.norm.weight.detach().clone()}, str(path / "extra.safetensors"))
    index["weight_map"]["model.norm.weight"] = "extra.safetensors"
    index["weight_map"]["zz.extra"] = first
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="the same tensor is stored in two shards: model.norm.weight"):
        Qwen3ForCausalLM.from_pretrained(path)


def test_an_index_without_weight_map_is_refused(checkpoint):
    path, _ = checkpoint
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="model.safetensors.index.json has no weight_map"):
        Qwen3ForCausalLM.from_pretrained(path)


def test_a_truncated_shard_is_named(checkpoint):
    path, model = checkpoint
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=f"cannot read .*{shard.name}"):
        Qwen3ForCausalLM.from_pretrained(path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_config_that_is_not_json_is_named(checkpoint):
    path, _ = checkpoint
    (path / "config.json").write_text("{model_type: qwen3")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        Qwen3ForCausalLM.from_pretrained(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json must hold a JSON object, got list"):
        Qwen3ForCausalLM.from_pretrained(path)
