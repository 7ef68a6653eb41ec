"""Qwen3-VL's vision features keyed by content (zoo/encoder_cache.py): the same image again skips the encoder, the
same token ids with another image miss, eviction under a small budget keeps results right; every result equals
the reference for the images actually given."""
import pytest
import torch
from PIL import Image

import zoo
from tests.zoo.test_compile_qwen3_vl import CONFIG
from zoo.encoder_cache import content_key, device_digest
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration, process_images
from zoo_ref.qwen3_vl.tiny import randomize_


def image(seed, size=64):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy())


def prompt(*images):
    """ids with one placeholder run per image (all images the same size: the same ids for other pictures)."""
    pixels, grid = process_images(list(images), min_pixels=32 * 32, max_pixels=64 * 64)
    ids = [1]
    for row in grid:
        ids += [CONFIG["vision_start_token_id"]] + [CONFIG["image_token_id"]] * (int(row.prod()) // 4) + \
               [CONFIG["vision_end_token_id"]]
    return {"input_ids": torch.tensor([ids + [7, 8]]), "pixel_values": pixels, "image_grid_thw": grid}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(CONFIG)), seed=5).eval()
    return model, zoo.compile(model, max_batch_size=2, max_seq_len=160, encoder_cache_mb=1)


def check(model, compiled, inputs):
    with torch.no_grad():
        assert relative_error(compiled(**inputs), model(**inputs)) < 1e-4


def test_same_image_hits_another_image_misses(models):
    model, compiled = models
    cache = compiled.encoder_cache
    a, b = prompt(image(1)), prompt(image(2))
    assert torch.equal(a["input_ids"], b["input_ids"])  # same ids: only the content tells them apart
    check(model, compiled, a)
    before = dict(cache.stats())
    check(model, compiled, a)
    assert cache.hits == before["hits"] + 1 and cache.misses == before["misses"]
    check(model, compiled, b)
    assert cache.misses == before["misses"] + 1
    tokens = compiled.generate(**b, max_new_tokens=3, eos_token_id=[])
    assert torch.equal(tokens, model.generate(**b, max_new_tokens=3, eos_token_id=[]))
    assert zoo.explain(compiled).encoder_cache["hits"] == cache.hits


def test_two_images_one_cached_and_eviction_under_a_small_budget(models):
    model, compiled = models
    cache = compiled.encoder_cache
    check(model, compiled, prompt(image(3)))
    hits, misses = cache.hits, cache.misses
    check(model, compiled, prompt(image(4), image(3)))  # a new image before a cached one: order kept
    assert (cache.hits, cache.misses) == (hits + 1, misses + 1)
    budget = cache.budget
    cache.budget = cache._size(next(iter(cache.entries.values())))  # room for one image
    try:
        for seed in (5, 6, 5, 6):
            check(model, compiled, prompt(image(seed)))
            assert cache.bytes <= cache.budget and len(cache.entries) == 1
    finally:
        cache.budget = budget


def test_content_keys():
    px = torch.randn(16, 8)
    grid = [1, 4, 4]
    assert content_key(px, grid) == content_key(px.clone(), grid)
    changed = px.clone()
    changed[3, 5] += 1e-3
    assert content_key(changed, grid) != content_key(px, grid)
    assert content_key(px, [1, 2, 8]) != content_key(px, grid)
    raw = px.view(-1).view(torch.uint8)  # the device hash (run on the CPU here): one flipped bit changes it
    flipped = raw.clone()
    flipped[17] ^= 1
    assert device_digest(raw) == device_digest(raw.clone()) != device_digest(flipped)


def test_encoder_cache_option_is_checked():
    from zoo_ref.errors import InputError
    from zoo_ref.qwen3 import Qwen3Config, Qwen3ForCausalLM
    text = Qwen3ForCausalLM(Qwen3Config.from_dict({"model_type": "qwen3", "vocab_size": 32, "hidden_size": 16,
                                                   "intermediate_size": 32, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "num_key_value_heads": 1,
                                                   "head_dim": 8}))
    with pytest.raises(InputError, match="encoder_cache_mb applies to models with a vision encoder"):
        zoo.compile(text, encoder_cache_mb=64)


def test_a_chat_turn_prefills_only_its_suffix(models):
    """A prompt that extends the last generate's sequence (prompt + tokens fed back) prefills only the rest and equals
    the reference's full recompute; another image behind the same ids is prefilled again from its first
    placeholder; a call in between, or a weight changed in place, leaves nothing to reuse."""
    model, compiled = models
    first = prompt(image(1))
    answer = compiled.generate(**first, max_new_tokens=4, eos_token_id=[])
    held = first["input_ids"].shape[1] + 3  # the prompt and the 3 tokens fed back (the 4th was only sampled)
    ids = torch.cat([first["input_ids"], answer, torch.tensor([[9, 10]])], 1)  # suffix of 3: padded to 4
    image_start = int((ids[0] == CONFIG["image_token_id"]).nonzero()[0])

    def turn(inputs, reused):
        before = dict(zoo.explain(compiled).prefix_cache)
        tokens, logits = compiled.generate(**inputs, max_new_tokens=4, eos_token_id=[], return_logits=True)
        ref_tokens, ref_logits = model.generate(**inputs, max_new_tokens=4, eos_token_id=[], return_logits=True)
        assert relative_error(logits, ref_logits) < 1e-4 and torch.equal(tokens, ref_tokens)
        after = zoo.explain(compiled).prefix_cache
        assert after["reused_tokens"] - before["reused_tokens"] == reused
        assert after["prefilled_tokens"] - before["prefilled_tokens"] == inputs["input_ids"].shape[1] - reused
        assert after["hits"] - before["hits"] == (reused > 0)

    turn({**first, "input_ids": ids}, held)
    turn({**prompt(image(2)), "input_ids": ids}, image_start)  # same ids, another picture
    compiled(**first)  # writes the cache
    turn({**first, "input_ids": ids}, 0)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.0)  # an in-place update (same values): the held K/V may be stale
    turn({**first, "input_ids": ids}, 0)
    assert zoo.explain(compiled).graphs["extend[b=1]"] == 1  # suffixes of every length: one graph
