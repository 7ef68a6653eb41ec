"""zoo.compile(Qwen3 / Qwen2) == zoo_ref on CPU (ZOO_TEST_CUDA=1: on the GPU, CUDA graphs included): logits with
left padding, 20 greedy decode steps, every site replaced; sampling settings are graph inputs (one decode graph per
bucket for 50 settings, mixed batches, seeded draws equal to the reference's). One compiled model per family for the
module (compiling is slow)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from tests.strategies import DEVICE, paired_dense, text_batches
from zoo_ref.layers import relative_error

CONFIGS = {
    "qwen3": {"model_type": "qwen3", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "tie_word_embeddings": True, "eos_token_id": 2, "pad_token_id": 0, "max_position_embeddings": 256,
              "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                  "rope_theta": 10000.0}},
    # dynamic NTK past 12 positions: prompts + 20 new tokens cross it, the frequencies change inside the graphs
    "qwen2": {"model_type": "qwen2", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
              "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0, "max_position_embeddings": 12,
              "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6}},
    # LongRoPE: short factors up to 10 positions, long ones beyond
    "qwen3-longrope": {"model_type": "qwen3", "vocab_size": 96, "hidden_size": 64, "intermediate_size": 96,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                       "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0,
                       "max_position_embeddings": 256,
                       "rope_parameters": {"rope_type": "longrope", "original_max_position_embeddings": 10,
                                           "short_factor": [1.0 + i / 4 for i in range(8)],
                                           "long_factor": [2.0 + i for i in range(8)], "rope_theta": 1e4}},
}
BATCH = 2  # one bucket: forward, prefill and decode compile once each


@pytest.fixture(scope="module", params=list(CONFIGS))
def models(request):
    _, model = paired_dense(CONFIGS[request.param], seed=4)
    model.to(DEVICE)
    return model, zoo.compile(model, max_batch_size=BATCH, max_seq_len=48)


@settings(max_examples=5)
@given(data=st.data())
def test_logits_and_20_greedy_steps_match_reference(models, data):
    model, compiled = models
    ids, mask = (x.to(DEVICE) for x in data.draw(text_batches(batch=BATCH), label="inputs"))
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
    valid = mask.bool()
    assert relative_error(compiled(ids, attention_mask=mask)[valid], ref[valid]) < 1e-4
    tokens, logits = compiled.generate(ids, attention_mask=mask, max_new_tokens=20, eos_token_id=[],
                                       return_logits=True)
    ref_tokens, ref_logits = model.generate(ids, attention_mask=mask, max_new_tokens=20, eos_token_id=[],
                                            return_logits=True)
    assert relative_error(logits, ref_logits) < 1e-4
    chosen = ref_logits.gather(-1, tokens[..., None])[..., 0]
    best = ref_logits.max(-1).values
    assert torch.all((tokens == ref_tokens) | (best - chosen <= 1e-5 * best.abs().clamp_min(1)))


def test_every_site_replaced_and_prompt_lengths_share_one_graph(models):
    model, compiled = models
    # a one-token prompt too (Dynamo would specialize a length of 1); generate pads a prompt to a power-of-two
    # length, 33 to 64 capped at max_seq_len 48 (its last slots are the decode's); a forward filling the whole
    # buffer shares the graph too
    for t in (5, 1, 2, 9, 33, 48):
        ids = torch.randint(3, 96, (BATCH, t), device=DEVICE)
        if t < 48:
            tokens = compiled.generate(ids, max_new_tokens=3, eos_token_id=[])
            assert torch.equal(tokens, model.generate(ids, max_new_tokens=3, eos_token_id=[])), t
        with torch.no_grad():
            assert relative_error(compiled(ids), model(ids)) < 1e-4
    report = zoo.explain(compiled)
    assert all(n == 1 for n in report.graphs.values()), report.graphs
    layers = model.config.num_hidden_layers
    for name, counts in report.per_graph:
        if name.startswith(("sample[", "greedy[", "inputs[")):  # a decode step's inputs, head, sampling
            assert name not in report.regions and counts["attention"] == counts["linears"] == 0, (name, counts)
            continue
        # a region: one layer's graph, run for every layer
        assert report.regions[name] == layers, (name, report.regions)
        assert counts["attention"] == counts["rope"] == 1 and counts["rope_unpaired"] == 0, (name, counts)
        assert counts["linears"] == 2, (name, counts)  # q/k/v (with Qwen2's biases) and gate/up
        # Qwen3's per-head q/k norms run inside the RoPE kernel (q and k sites); Qwen2 has none
        assert counts["rope_norm"] == 2 * model.config.qk_norm, (name, counts)
        # ... and where attention reads k and v from the caches (decode), that kernel writes them there itself
        assert counts["rope_cache"] == (model.config.qk_norm and name.startswith("decode")), (name, counts)
        # every attention site takes its rows' windows: no [B, 1, T, S] mask is built
        assert counts["attention_window"] == 1 and counts["masks_built"] == 0, (name, counts)
    assert {name for name, _ in report.per_graph} >= {f"prefill[b={BATCH}]", f"decode[b={BATCH}]"}
    every_layer = {f"layers.{i}" for i in range(layers)}
    assert all(set(report.sites[p]) == every_layer for p in ("attention", "attention_window", "rope", "linears"))


def test_50_sampling_settings_one_decode_graph_and_draws_equal_the_reference(models):
    model, compiled = models
    ids = torch.randint(3, 96, (BATCH, 6), device=DEVICE)
    g = torch.Generator().manual_seed(0)
    for i in range(50):
        kw = dict(do_sample=bool(i % 5), temperature=0.5 + torch.rand(1, generator=g).item(), top_k=i % 7,
                  top_p=[0.3 + 0.7 * torch.rand(1, generator=g).item(), 1.0], repetition_penalty=1 + (i % 3) / 4,
                  seed=i, max_new_tokens=3, eos_token_id=[])
        got = compiled.generate(ids, **kw)
        if i < 10:  # same logits (fp32) and the same counter-based noise: the reference's very tokens
            assert torch.equal(got, model.generate(ids, **kw)), i
    graphs = zoo.explain(compiled).graphs
    assert graphs[f"decode[b={BATCH}]"] == 1 and graphs[f"prefill[b={BATCH}]"] == 1, graphs
    # greedy calls (every fifth) select without the sampling branch: one graph of each kind
    assert graphs[f"sample[b={BATCH}]"] == 1 and graphs[f"greedy[b={BATCH}]"] == 1, graphs


def test_mixed_batch_and_seeds(models):
    model, compiled = models
    ids = torch.randint(3, 96, (BATCH, 7), device=DEVICE)
    mixed = dict(do_sample=[False, True], top_p=[1.0, 0.9], temperature=[1.0, 1.3], max_new_tokens=8,
                 eos_token_id=[])
    a = compiled.generate(ids, seed=11, **mixed)
    greedy_alone = model.generate(ids[:1], max_new_tokens=8, eos_token_id=[])
    assert torch.equal(a[:1], greedy_alone)
    assert torch.equal(compiled.generate(ids, seed=11, **mixed), a)  # a seed reproduces its tokens
    other = compiled.generate(ids, seed=12, **mixed)
    assert torch.equal(other[:1], a[:1]) and not torch.equal(other[1:], a[1:])  # only the sampled row moves
    state = torch.random.get_rng_state()
    compiled.generate(ids, seed=5, **mixed)
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global RNG untouched


class Collect:
    """A transformers-style streamer (put / end) that keeps what it was given."""

    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value)

    def end(self):
        self.ended = True


def test_streamer_sees_the_prompt_then_every_token(models):
    model, compiled = models
    ids = torch.randint(3, 96, (1, 5), device=DEVICE)
    for run in (compiled.generate, model.generate):
        streamer = Collect()
        tokens = run(ids, max_new_tokens=6, eos_token_id=[], streamer=streamer)
        assert torch.equal(streamer.puts[0], ids.cpu()) and streamer.ended  # on the host, like transformers'
        assert torch.equal(torch.cat(streamer.puts[1:])[None], tokens.cpu())


def test_nan_in_stale_cache_slots_never_reaches_a_later_call(models):
    """Slots past every row's length hold NaN (an earlier call's garbage): forward and generate stay finite and
    equal to the reference, which never reads them."""
    model, compiled = models
    for cache in compiled.caches[BATCH]:
        cache.k[:, :, 12:] = float("nan")
        cache.v[:, :, 12:] = float("nan")
    ids = torch.randint(3, 96, (BATCH, 6), device=DEVICE)
    with torch.no_grad():
        ref = model(ids)
    out = compiled(ids)
    assert torch.isfinite(out).all() and relative_error(out, ref) < 1e-4
    tokens, logits = compiled.generate(ids, max_new_tokens=4, eos_token_id=[], return_logits=True)
    assert torch.isfinite(logits).all()
    assert torch.equal(tokens, model.generate(ids, max_new_tokens=4, eos_token_id=[]))


def test_right_padding_and_padding_queries_match_the_reference_everywhere(models):
    """Windows on either side (right padding is fine for forward) and every position compared, padding ones
    included: a padding query attends to nothing in both."""
    model, compiled = models
    ids = torch.randint(3, 96, (BATCH, 7), device=DEVICE)
    mask = torch.ones(BATCH, 7, dtype=torch.long, device=DEVICE)
    mask[0, 5:] = 0  # right padding
    mask[1, :2] = 0  # left padding
    mask[1, 6:] = 0  # and right
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
    assert relative_error(compiled(ids, attention_mask=mask), ref) < 1e-4


def test_holes_in_the_mask_are_refused_by_both(models):
    model, compiled = models
    ids = torch.randint(3, 96, (BATCH, 5), device=DEVICE)
    mask = torch.ones(BATCH, 5, dtype=torch.long, device=DEVICE)
    mask[1, 2] = 0
    for run in (model, compiled):
        with pytest.raises(ValueError, match=r"attention_mask rows \[1\] have holes"):
            run(ids, attention_mask=mask)


def test_sliding_window_layers_equal_the_reference_and_attend_by_their_window():
    """Qwen2 with a sliding-window layer (transformers' use_sliding_window / max_window_layers): compiled equals the
    reference with and without left padding, prompt and decode longer than the window; the sliding layer attends
    by its rows' windows limited to the last `sliding_window` slots (no mask built), like the full layer."""
    config = {**CONFIGS["qwen2"], "use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1}
    _, model = paired_dense(config, seed=5)
    model.to(DEVICE)
    compiled = zoo.compile(model, max_batch_size=2, max_seq_len=32)
    ids = torch.randint(3, 96, (2, 9), device=DEVICE)
    mask = torch.ones(2, 9, dtype=torch.long, device=DEVICE)
    mask[1, :4] = 0
    for kw in ({}, {"attention_mask": mask}):
        with torch.no_grad():
            ref = model(ids, **kw)
        valid = kw.get("attention_mask", mask.new_ones(2, 9)).bool()
        assert relative_error(compiled(ids, **kw)[valid], ref[valid]) < 1e-4
        tokens, logits = compiled.generate(ids, max_new_tokens=6, eos_token_id=[], return_logits=True, **kw)
        ref_tokens, ref_logits = model.generate(ids, max_new_tokens=6, eos_token_id=[], return_logits=True, **kw)
        assert torch.equal(tokens, ref_tokens) and relative_error(logits, ref_logits) < 1e-4
    # a conversation's next turn: the suffix after the held prefix (the extend graph) attends by the window too.
    # Past dynamic NTK's threshold (12 positions here) the prefix is not reused: its K were rotated by the earlier
    # calls' frequencies, the reference's fresh prefill rotates them by this call's (they differed: 1.3e-2); nor
    # when the held sequence went past it (a shorter prompt taken from a long conversation: the last case)
    held = None
    for prompt_len, extra, reused in ((4, 2, 1), (9, 3, 0), (None, 0, 0)):
        if prompt_len is None:
            follow = held[:, :10]  # within the threshold, but the held K came from calls past it
        else:
            first = compiled.generate(ids[:1, :prompt_len], max_new_tokens=4, eos_token_id=[])
            follow = torch.cat([ids[:1, :prompt_len], first, torch.randint(3, 96, (1, extra), device=DEVICE)], 1)
        hits = compiled.prefix.stats["hits"]
        tokens, logits = compiled.generate(follow, max_new_tokens=4, eos_token_id=[], return_logits=True)
        ref_tokens, ref_logits = model.generate(follow, max_new_tokens=4, eos_token_id=[], return_logits=True)
        assert compiled.prefix.stats["hits"] == hits + reused, prompt_len
        assert torch.equal(tokens, ref_tokens) and relative_error(logits, ref_logits) < 1e-4, prompt_len
        held = torch.cat([follow, tokens], 1)
    report = zoo.explain(compiled)
    for name, counts in report.per_graph:
        if name.startswith(("sample[", "greedy[", "inputs[")):
            continue
        # the full layer's region and the sliding layer's (window=3): each attends by its window, no mask built
        assert counts["attention_window"] == 1 and counts["masks_built"] == 0, (name, counts)
        assert counts["attention_sliding"] == (1 if name.endswith("window=3") else 0), (name, counts)
        assert report.regions[name] == 1, (name, report.regions)  # one layer of each kind
    assert {"extend[b=1]", "extend[b=1] window=3", "decode[b=2] window=3"} <= set(report.graphs)
    sliding = [name for name, _ in report.per_graph if name.endswith("window=3")]
    assert report.sites["attention_sliding"] == {"layers.1": len(sliding)}  # the sliding layer, in each graph
