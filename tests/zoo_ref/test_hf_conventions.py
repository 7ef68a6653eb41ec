"""Hugging Face conventions on every zoo_ref model: save_pretrained that transformers loads back, from_pretrained's
dtype / torch_dtype / device_map spellings, .device / .dtype, one clear error for a hub id."""
import pytest
import torch
import transformers

from tests.strategies import paired_dense
from zoo_ref.checkpoint import CheckpointError, size_in_bytes
from zoo_ref.layers import relative_error
from zoo_ref.qwen2 import Qwen2ForCausalLM
from zoo_ref.qwen3 import Qwen3ForCausalLM
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict

DENSE = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "eos_token_id": 2, "pad_token_id": 0}


@pytest.mark.parametrize("family, tie, yarn", [("qwen3", True, True), ("qwen3", False, False), ("qwen2", False, False)])
def test_save_pretrained_loads_in_transformers(family, tie, yarn, tmp_path):
    config = {"model_type": family, **DENSE, "tie_word_embeddings": tie, "rope_theta": 1e4}
    if yarn:
        config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
    _, ours = paired_dense(config, seed=1)
    ours.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(3, 96, (2, 40))
    with torch.no_grad():
        assert relative_error(hf(ids).logits, ours(ids)) < 1e-5
    again = type(ours).from_pretrained(tmp_path)
    assert torch.equal(again(ids), ours(ids))


def test_qwen3_vl_save_pretrained_loads_in_transformers(tmp_path):
    config = tiny_config_dict(layers=2)
    ours = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(config)), seed=2).eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(7, 100, (1, 12))
    with torch.no_grad():
        assert relative_error(hf(input_ids=ids).logits, ours(ids)) < 1e-5


def test_dtype_and_device_spellings(tmp_path):
    _, ours = paired_dense({"model_type": "qwen3", **DENSE, "tie_word_embeddings": True}, seed=0)
    ours.to(torch.bfloat16).save_pretrained(tmp_path)
    for kw, want in ((dict(dtype="bfloat16"), torch.bfloat16), (dict(torch_dtype=torch.float16), torch.float16),
                     (dict(dtype="auto"), torch.bfloat16), (dict(), torch.float32),
                     (dict(dtype="torch.float32", device_map="cpu"), torch.float32)):
        model = Qwen3ForCausalLM.from_pretrained(tmp_path, **kw)
        assert model.dtype == want and model.device == torch.device("cpu"), kw
    with pytest.raises(ValueError, match="dtype must be a torch.dtype, one of .* or 'auto', got 'bf17'"):
        Qwen3ForCausalLM.from_pretrained(tmp_path, dtype="bf17")
    with pytest.raises(ValueError, match="pass dtype= or torch_dtype=, not both"):
        Qwen3ForCausalLM.from_pretrained(tmp_path, dtype="bfloat16", torch_dtype="bfloat16")
    with pytest.raises(ValueError, match="per-module dict is not supported"):
        Qwen2ForCausalLM.from_pretrained(tmp_path, device_map={"": 0})  # refused before the files are read


def test_hub_id_gets_one_clear_error():
    with pytest.raises(CheckpointError, match="'Qwen/Qwen3-1.7B' is not a local checkpoint directory \\(it looks "
                                              "like a hub id\\): zoo loads local directories only"):
        Qwen3ForCausalLM.from_pretrained("Qwen/Qwen3-1.7B")


def test_shard_sizes():
    assert size_in_bytes("5GB") == 5 * 10 ** 9 and size_in_bytes("2MiB") == 2 * 2 ** 20 and size_in_bytes(10) == 10
    with pytest.raises(ValueError, match="max_shard_size must be"):
        size_in_bytes("lots")
