"""zoo_ref Qwen3-VL vs transformers on random tiny configs and random inputs (fp32 logits)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import hf_logits, paired_models, qwen3_vl_configs, vl_inputs
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl.tiny import tiny_config_dict

WORST = {"rel_err": 0.0}


@settings(max_examples=100)
@given(data=st.data())
def test_logits_match_transformers(data):
    config = data.draw(qwen3_vl_configs(), label="config")
    inputs = data.draw(vl_inputs(config), label="inputs")
    hf, ours = paired_models(config, seed=data.draw(st.integers(0, 1000), label="seed"))
    ref = hf_logits(hf, inputs)
    with torch.no_grad():
        out = ours(**inputs)
    valid = inputs["attention_mask"].bool()
    err = relative_error(out[valid], ref[valid])
    WORST["rel_err"] = max(WORST["rel_err"], err)
    assert err < 1e-4, f"relative error {err:.3e}"


@pytest.mark.parametrize("kind", ["text", "image", "images", "video", "mixed"])
@settings(max_examples=4)
@given(data=st.data())
def test_each_input_kind_batch2(kind, data):
    """Every input kind at batch 2 (left padding) on one fixed config, whatever the random draw above hit."""
    config = tiny_config_dict(deepstack=(0, 2), v_depth=3)
    inputs = data.draw(vl_inputs(config, batch=2, kinds=(kind,)))
    hf, ours = paired_models(config, seed=3)
    ref = hf_logits(hf, inputs)
    with torch.no_grad():
        out = ours(**inputs)
    valid = inputs["attention_mask"].bool()
    assert relative_error(out[valid], ref[valid]) < 1e-4


@settings(max_examples=3)
@given(data=st.data())
def test_visual_features_change_logits(data):
    """Guards against a test that cannot fail: the image pixels must influence the text logits."""
    config = tiny_config_dict()
    inputs = data.draw(vl_inputs(config, batch=1, kinds=("image",)))
    _, ours = paired_models(config)
    with torch.no_grad():
        a = ours(**inputs)
        inputs["pixel_values"] = inputs["pixel_values"] + 1
        b = ours(**inputs)
    assert relative_error(a[:, -1], b[:, -1]) > 1e-3


def teardown_module(module):
    print(f"\nworst Qwen3-VL relative error vs transformers: {WORST['rel_err']:.3e}")


@settings(max_examples=3)
@given(data=st.data())
def test_mrope_sections_beyond_half_the_head_match_transformers(data):
    """transformers builds and runs configs whose mrope_section sums past head_dim / 2 (its own test config does):
    the H and W frequency sets are clipped; zoo_ref computes the same."""
    config = tiny_config_dict(head_dim=16, mrope_section=(6, 4, 4))  # sums to 14 > 8
    hf, ours = paired_models(config, seed=3)
    inputs = data.draw(vl_inputs(config, kinds=("image", "video", "mixed")), label="inputs")
    with torch.no_grad():
        got = ours(**inputs)
    valid = inputs["attention_mask"].bool()
    assert relative_error(got[valid], hf_logits(hf, inputs)[valid]) < 1e-4
