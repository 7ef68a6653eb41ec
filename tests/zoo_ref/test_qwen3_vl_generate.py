"""Reference generation with the static KV cache equals the no-cache forward at every step."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import qwen3_vl_configs, vl_inputs
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict


def build(config_dict, seed=0):
    return randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(config_dict)), seed).eval()


def no_cache_logits(model, inputs, tokens):
    """Logits of the full forward over prompt + generated tokens, at the positions that chose each token."""
    ids = torch.cat([inputs["input_ids"], tokens], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(tokens)], dim=1)
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, **kw)
    t = inputs["input_ids"].shape[1]
    return logits[:, t - 1: t - 1 + tokens.shape[1]]


@settings(max_examples=25)
@given(data=st.data())
def test_greedy_generate_equals_no_cache_argmax(data):
    config = data.draw(qwen3_vl_configs(), label="config")
    inputs = data.draw(vl_inputs(config), label="inputs")
    model = build(config, data.draw(st.integers(0, 100), label="seed"))
    steps = data.draw(st.integers(1, 8), label="steps")
    tokens, step_logits = model.generate(**inputs, max_new_tokens=steps, eos_token_id=[], return_logits=True)
    assert tokens.shape == (inputs["input_ids"].shape[0], steps)
    ref = no_cache_logits(model, inputs, tokens)
    assert relative_error(step_logits, ref) < 1e-4
    ref = ref.index_fill(-1, torch.tensor([5, 6]), float("-inf"))  # placeholders are never generated
    chosen = ref.gather(-1, tokens[..., None])[..., 0]
    best = ref.max(-1).values
    # the generated token is the no-cache argmax (up to an fp32 tie between two candidates)
    assert torch.all((tokens == ref.argmax(-1)) | (best - chosen <= 1e-5 * best.abs().clamp_min(1)))


def test_eos_stops_and_pads():
    model = build(tiny_config_dict())
    ids = torch.tensor([[1, 20, 21, 22], [1, 30, 31, 32]])
    free = model.generate(ids, max_new_tokens=6, eos_token_id=[])
    eos = int(free[0, 0])  # row 0 emits it first
    stopped = model.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    for row in range(2):
        expected = free[row].tolist()
        if eos in expected:  # up to and including the eos, then padding
            cut = expected.index(eos) + 1
            expected = expected[:cut] + [0] * (6 - cut)
        assert stopped[row].tolist() == expected[:stopped.shape[1]]
    assert stopped.shape[1] == 6 or eos in free[1].tolist()


def test_sampling_seeded_and_top_k1_is_greedy():
    model = build(tiny_config_dict())
    ids = torch.tensor([[1, 20, 21, 22]])
    kw = dict(max_new_tokens=6, eos_token_id=[], do_sample=True, temperature=1.3, top_p=0.9, seed=11)
    a, b = model.generate(ids, **kw), model.generate(ids, **kw)
    assert torch.equal(a, b)
    greedy = model.generate(ids, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(model.generate(ids, max_new_tokens=6, eos_token_id=[], do_sample=True, top_k=1, seed=3),
                       greedy)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        model.generate(ids, do_sample=True, temperature=0.0)
