"""Qwen3 / Qwen2 references vs transformers: logits with left padding, greedy generate, sharded round trip."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import dense_config_dicts, hf_positions, paired_dense, text_batches
from zoo_ref.layers import relative_error
from zoo_ref.qwen2 import Qwen2Config, Qwen2ForCausalLM
from zoo_ref.qwen2.model import CONFIGS as QWEN2_CONFIGS
from zoo_ref.qwen3 import Qwen3Config, Qwen3ForCausalLM
from zoo_ref.qwen3.model import CONFIGS as QWEN3_CONFIGS

FAMILIES = ["qwen3", "qwen2"]


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=10)
@given(data=st.data())
def test_logits_match_transformers_with_left_padding(family, data):
    config = data.draw(dense_config_dicts(family), label="config")
    hf, ours = paired_dense(config, seed=data.draw(st.integers(0, 99), label="seed"))
    ids, mask = data.draw(text_batches(), label="inputs")
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, position_ids=hf_positions(mask)).logits
        got = ours(ids, attention_mask=mask)
    valid = mask.bool()
    assert relative_error(got[valid], want[valid]) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4)
@given(data=st.data())
def test_greedy_generate_matches_transformers(family, data):
    config = data.draw(dense_config_dicts(family), label="config")
    hf, ours = paired_dense(config, seed=data.draw(st.integers(0, 99), label="seed"))
    ids, mask = data.draw(text_batches(), label="inputs")
    n = 12
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0,
                           min_new_tokens=n)[:, ids.shape[1]:]
    got, logits = ours.generate(ids, attention_mask=mask, max_new_tokens=n, eos_token_id=[], return_logits=True)
    assert got.shape == want.shape
    # equal, unless a step was a near-tie in fp32 (then everything after may differ)
    differ = (got != want).any(0).nonzero()
    if len(differ):
        s = int(differ[0])
        chosen = logits[:, s].gather(-1, want[:, s:s + 1])[:, 0]
        assert torch.all(logits[:, s].max(-1).values - chosen <= 1e-5 * chosen.abs().clamp_min(1)), (got, want)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=2)
@given(data=st.data())
def test_from_pretrained_of_a_sharded_save_pretrained(family, data, tmp_path_factory):
    config = data.draw(dense_config_dicts(family), label="config")
    tmp_path = tmp_path_factory.mktemp(family)
    hf, _ = paired_dense(config, seed=3)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    cls = {"qwen3": Qwen3ForCausalLM, "qwen2": Qwen2ForCausalLM}[family]
    ours = cls.from_pretrained(tmp_path)
    ids = torch.randint(3, 96, (2, 7))
    with torch.no_grad():
        assert relative_error(ours(ids), hf(ids).logits) < 1e-4
    if config["tie_word_embeddings"]:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight
    bf16 = cls.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf16.lm_head.weight.dtype == torch.bfloat16 and bf16.model.rotary_emb.inv_freq.dtype == torch.float32


def test_shipped_configs_build_the_real_shapes():
    import json
    sizes = {}
    for path in sorted(QWEN3_CONFIGS.glob("*.json")) + sorted(QWEN2_CONFIGS.glob("*.json")):
        d = json.loads(path.read_text())
        cls = Qwen3Config if d["model_type"] == "qwen3" else Qwen2Config
        c = cls.from_dict(d)
        with torch.device("meta"):
            model = (Qwen3ForCausalLM if cls is Qwen3Config else Qwen2ForCausalLM)(c)
        sizes[path.stem] = sum(p.numel() for p in model.parameters()) / 1e9
    # published sizes (billions, tied embeddings counted once)
    want = {"qwen3-0.6b": 0.596, "qwen3-1.7b": 1.72, "qwen3-4b": 4.02, "qwen3-8b": 8.19,
            "qwen2.5-0.5b-instruct": 0.494, "qwen2.5-1.5b-instruct": 1.54, "qwen2.5-7b-instruct": 7.62}
    assert set(sizes) == set(want)
    for name, n in want.items():
        assert abs(sizes[name] - n) / n < 0.01, (name, sizes[name])


def test_config_errors_name_the_field():
    from zoo_ref.errors import ConfigError
    d = {"model_type": "qwen3", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}
    with pytest.raises(ConfigError, match="expected model_type 'qwen3', got 'qwen2'"):
        Qwen3Config.from_dict({**d, "model_type": "qwen2"})
    with pytest.raises(ConfigError, match="Qwen2 config is missing required field\\(s\\): vocab_size"):
        Qwen2Config.from_dict({**d, "model_type": "qwen2", "vocab_size": None})
    with pytest.raises(ConfigError, match="sliding_window must be an int >= 1, got 0"):
        Qwen3Config.from_dict({**d, "use_sliding_window": True, "sliding_window": 0})
    with pytest.raises(ConfigError, match="layer_types must list"):
        Qwen2Config.from_dict({**d, "model_type": "qwen2", "layer_types": ["sliding_attention"] * 2})
    with pytest.raises(ConfigError, match="unsupported rope_type 'proportional'"):
        Qwen3Config.from_dict({**d, "rope_parameters": {"rope_type": "proportional", "factor": 2.0}})
    with pytest.raises(ConfigError, match="dynamic rope scaling needs a factor"):
        Qwen3Config.from_dict({**d, "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4}})
    with pytest.raises(ConfigError, match="longrope rope scaling needs long_factor"):
        Qwen3Config.from_dict({**d, "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 8,
                                                        "original_max_position_embeddings": 8}})
    with pytest.raises(ConfigError, match="longrope short_factor must have head_dim / 2 = 8 entries, got 3"):
        Qwen3ForCausalLM(Qwen3Config.from_dict({**d, "rope_parameters": {
            "rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 8,
            "original_max_position_embeddings": 8}}))
    with pytest.raises(ConfigError, match="llama3 rope scaling needs a factor"):
        Qwen3Config.from_dict({**d, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}})
