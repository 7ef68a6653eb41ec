"""Fuzzing the public boundary: malformed arguments to every entry point (reference and compiled forward and
generate of Qwen3 and Qwen3-VL, MLA forward) raise only zoo's own errors (ZooError, never an internal IndexError /
RuntimeError / AttributeError), and leave weights, caches and the compiled models' later results bit-identical."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from tests.strategies import paired_dense
from zoo_ref.deepseek import MLA, MLAConfig
from zoo_ref.errors import InputError, ZooError
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict

VOCAB = 96
QWEN3 = {"model_type": "qwen3", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
         "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": True}
GOOD_IDS = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
GOOD_MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
CASES = {"text": 0, "vl": 0, "mla": 0}


@pytest.fixture(scope="module")
def dense():
    _, model = paired_dense(QWEN3, seed=5)
    return model, zoo.compile(model, max_batch_size=2, max_seq_len=16)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# (name, kwargs for forward or generate, which calls it applies to)
BAD_TOKENS = [
    ("float ids", dict(input_ids=GOOD_IDS.float())),
    ("1-d ids", dict(input_ids=GOOD_IDS[0])),
    ("empty prompt", dict(input_ids=GOOD_IDS[:, :0])),
    ("negative id", dict(input_ids=GOOD_IDS - 6)),
    ("id past the vocabulary", dict(input_ids=GOOD_IDS + VOCAB)),
    ("ids as a list", dict(input_ids=GOOD_IDS.tolist())),
    ("ids as numpy", dict(input_ids=GOOD_IDS.numpy())),
    ("mask of another shape", dict(attention_mask=GOOD_MASK[:, 1:])),
    ("mask of 2s", dict(attention_mask=GOOD_MASK * 2)),
    ("float mask", dict(attention_mask=GOOD_MASK.float() / 2)),
    ("a row with no token", dict(attention_mask=GOOD_MASK * torch.tensor([[0], [1]]))),
    ("mask as a list", dict(attention_mask=GOOD_MASK.tolist())),
]
BAD_GENERATE = [
    ("right padding", dict(attention_mask=GOOD_MASK.flip(1))),
    ("max_new_tokens 0", dict(max_new_tokens=0)), ("max_new_tokens -3", dict(max_new_tokens=-3)),
    ("max_new_tokens 2.5", dict(max_new_tokens=2.5)), ("max_new_tokens True", dict(max_new_tokens=True)),
    ("temperature 0", dict(do_sample=True, temperature=0.0)), ("temperature nan", dict(temperature=float("nan"))),
    ("temperature str", dict(temperature="hot")), ("top_p 0", dict(top_p=0.0)), ("top_p 1.5", dict(top_p=1.5)),
    ("top_k -1", dict(top_k=-1)), ("top_k 2.5", dict(top_k=2.5)),
    ("penalty nan", dict(repetition_penalty=float("nan"))),
    ("penalty 0", dict(repetition_penalty=0.0)), ("seed -1", dict(seed=-1)), ("seed 2^40", dict(seed=2 ** 40)),
    ("seed str", dict(seed="x")), ("do_sample str", dict(do_sample="yes")), ("3 rows of top_p", dict(top_p=[0.5] * 3)),
    ("eos str", dict(eos_token_id="</s>")), ("eos float", dict(eos_token_id=[1.5])), ("pad -1", dict(pad_token_id=-1)),
    ("too long for the cache", dict(max_new_tokens=40)),
]


@settings(max_examples=120)
@given(case=st.sampled_from(BAD_TOKENS + BAD_GENERATE), compiled_side=st.booleans(), forward=st.booleans())
def test_text_boundary(dense, case, compiled_side, forward):
    model, compiled = dense
    name, bad = case
    if forward and any(k not in ("input_ids", "attention_mask") for k in bad):
        forward = False  # generation arguments: only generate takes them
    if forward and name == "right padding":
        forward = False  # forward accepts any 0/1 mask with a token per row
    if name == "too long for the cache" and not compiled_side:
        bad = dict(max_new_tokens=40000)  # the reference's bound is max_position_embeddings (32768)
    call = {(False, True): model.forward, (False, False): model.generate,
            (True, True): compiled.forward, (True, False): compiled.generate}[(compiled_side, forward)]
    before = snapshot(model)
    kwargs = {"input_ids": GOOD_IDS, "attention_mask": GOOD_MASK, **bad}
    if not forward:
        kwargs.setdefault("max_new_tokens", 2)
    with pytest.raises(ZooError):
        call(**kwargs)
    assert same_state(model, before), name
    CASES["text"] += 1


def test_compiled_results_unchanged_after_the_fuzz(dense):
    """Run last in this module's order: the errors above left nothing behind in the compiled model's state."""
    model, compiled = dense
    with torch.no_grad():
        ref = model(GOOD_IDS, attention_mask=GOOD_MASK)
    before = compiled(GOOD_IDS, attention_mask=GOOD_MASK)
    tokens = compiled.generate(GOOD_IDS, attention_mask=GOOD_MASK, max_new_tokens=4, eos_token_id=[])
    for case in BAD_TOKENS + BAD_GENERATE:
        with pytest.raises(ZooError):
            compiled.generate(**{"input_ids": GOOD_IDS, "attention_mask": GOOD_MASK, "max_new_tokens": 2, **case[1]})
    assert torch.equal(compiled(GOOD_IDS, attention_mask=GOOD_MASK), before)
    assert torch.equal(compiled.generate(GOOD_IDS, attention_mask=GOOD_MASK, max_new_tokens=4, eos_token_id=[]),
                       tokens)
    assert torch.allclose(before, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- Qwen3-VL
VL = tiny_config_dict(layers=1, v_depth=1, deepstack=(0,), patch=8)
GRID = torch.tensor([[1, 4, 4]])
N_PATCH, PATCH_DIM = 16, 3 * 2 * 8 * 8
VL_IDS = torch.tensor([[7, 3] + [5] * 4 + [4, 8]])


@pytest.fixture(scope="module")
def vl():
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(VL)), seed=1).eval()
    return model, zoo.compile(model, max_batch_size=1, max_seq_len=24)


def good_pixels():
    return torch.randn(N_PATCH, PATCH_DIM, generator=torch.Generator().manual_seed(0))


BAD_VISUAL = [
    ("NaN pixel", lambda: dict(pixel_values=good_pixels().index_fill(0, torch.tensor([3]), float("nan")))),
    ("inf pixel", lambda: dict(pixel_values=good_pixels() * float("inf"))),
    ("float grid", lambda: dict(image_grid_thw=GRID.float())),
    ("grid without pixels", lambda: dict(pixel_values=None)),
    ("pixels without grid", lambda: dict(image_grid_thw=None)),
    ("grid of another image", lambda: dict(image_grid_thw=torch.tensor([[1, 4, 8]]))),
    ("odd grid", lambda: dict(image_grid_thw=torch.tensor([[1, 3, 4]]))),
    ("pixels of another width", lambda: dict(pixel_values=good_pixels()[:, :-1])),
    ("integer pixels", lambda: dict(pixel_values=good_pixels().long())),
    ("numpy pixels", lambda: dict(pixel_values=good_pixels().numpy())),
    ("more placeholders than features", lambda: dict(input_ids=torch.tensor([[7, 3] + [5] * 5 + [4, 8]]))),
    ("a video grid and no video", lambda: dict(video_grid_thw=GRID)),
]


@settings(max_examples=40)
@given(case=st.sampled_from(BAD_VISUAL), compiled_side=st.booleans(), forward=st.booleans())
def test_visual_boundary_and_nothing_poisoned(vl, case, compiled_side, forward):
    model, compiled = vl
    runner = compiled if compiled_side else model
    good = dict(input_ids=VL_IDS, pixel_values=good_pixels(), image_grid_thw=GRID)
    with torch.no_grad():
        before = compiled(**good)
    kwargs = {**good, **case[1]()}
    with pytest.raises(ZooError):
        runner(**kwargs) if forward else runner.generate(**kwargs, max_new_tokens=2)
    text_only = torch.tensor([[7, 8, 9]])  # a later call that reads the same static cache
    out = compiled(text_only)
    assert torch.isfinite(out).all() and torch.equal(compiled(**good), before), case[0]
    CASES["vl"] += 1


# ---------------------------------------------------------------------------------------------- MLA
MLA_CONFIG = {"model_type": "deepseek_v3", "hidden_size": 32, "num_attention_heads": 2, "q_lora_rank": 16,
              "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}


@pytest.fixture(scope="module")
def mla():
    m = randomize_(MLA(MLAConfig.from_dict(MLA_CONFIG)), seed=3).eval()
    other = MLA(MLAConfig.from_dict({**MLA_CONFIG, "kv_lora_rank": 8}))
    return m, zoo.compile(m), other


BAD_MLA = [
    ("int start_pos", lambda c: dict(start_pos=3)), ("list start_pos", lambda c: dict(start_pos=[3])),
    ("float start_pos", lambda c: dict(start_pos=torch.tensor([3.0]))),
    ("int seq_lens", lambda c: dict(seq_lens=2)), ("seq_lens past T", lambda c: dict(seq_lens=torch.tensor([9]))),
    ("negative start", lambda c: dict(start_pos=torch.tensor([-1]))),
    ("overflow", lambda c: dict(start_pos=torch.tensor([14]))),
    ("x of ints", lambda c: dict(x=torch.ones(1, 3, 32).long())),
    ("x of another width", lambda c: dict(x=torch.ones(1, 3, 31))),
    ("x as numpy", lambda c: dict(x=np.ones((1, 3, 32)))),
    ("cache of another config", lambda c: dict(cache=c.new_cache(1, 16))),
    ("cache of another batch", lambda c: dict(cache=None)), ("a dict as cache", lambda c: dict(cache={"kv": 1})),
    ("mode", lambda c: dict(mode="fast")), ("bf16 x", lambda c: dict(x=torch.ones(1, 3, 32, dtype=torch.bfloat16))),
]


@settings(max_examples=60)
@given(case=st.sampled_from(BAD_MLA), compiled_side=st.booleans())
def test_mla_boundary_cache_untouched(mla, case, compiled_side):
    m, compiled, other = mla
    cache = m.new_cache(1, 16)
    cache.kv.normal_(generator=torch.Generator().manual_seed(1))
    cache.pe.normal_(generator=torch.Generator().manual_seed(2))
    saved = cache.kv.clone(), cache.pe.clone()
    kwargs = {"x": torch.rand(1, 3, 32), "cache": cache, "start_pos": torch.tensor([2]), **case[1](other)}
    if kwargs["cache"] is None:
        kwargs["cache"] = m.new_cache(2, 16)
    with pytest.raises(ZooError):
        (compiled if compiled_side else m)(**kwargs)
    assert torch.equal(cache.kv, saved[0]) and torch.equal(cache.pe, saved[1]), case[0]
    CASES["mla"] += 1


def test_zoo_compile_arguments(dense):
    model, _ = dense
    for kw, cls in ((dict(max_batch_size=0), InputError), (dict(max_seq_len=0), InputError),
                    (dict(max_batch_size=2.0), TypeError), (dict(passes=("attention", "fusion")), InputError)):
        with pytest.raises(cls) as e:
            zoo.compile(model, **kw)
        assert isinstance(e.value, ZooError) and list(kw)[0] in str(e.value) or "fusion" in str(e.value)
    with pytest.raises(TypeError, match="zoo.compile supports zoo_ref models"):
        zoo.compile(torch.nn.Linear(2, 2))
