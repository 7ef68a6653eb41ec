"""zoo.compile(Qwen3-VL) == zoo_ref on CPU (ZOO_TEST_CUDA=1: on the GPU): prefill with images/video, 20 decode
steps, every site replaced, no recompiles. One compiled model is shared by the whole module (compiling is the slow
part)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from tests.strategies import DEVICE, vl_inputs
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict

CONFIG = tiny_config_dict(layers=2, v_depth=2, deepstack=(0, 1), kv_heads=2, heads=4)


def on_device(inputs):
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(CONFIG)), seed=5).eval().to(DEVICE)
    return model, zoo.compile(model, max_batch_size=2, max_seq_len=160)


@settings(max_examples=8)
@given(data=st.data())
def test_prefill_and_20_decode_steps_match_reference(models, data):
    model, compiled = models
    inputs = on_device(data.draw(vl_inputs(CONFIG, kinds=("image", "images", "video", "mixed", "text")),
                                 label="inputs"))
    with torch.no_grad():
        ref = model(**inputs)
    out = compiled(**inputs)
    valid = inputs["attention_mask"].bool()
    assert relative_error(out[valid], ref[valid]) < 1e-4
    tokens, logits = compiled.generate(**inputs, max_new_tokens=20, eos_token_id=[], return_logits=True)
    ref_tokens, ref_logits = model.generate(**inputs, max_new_tokens=20, eos_token_id=[], return_logits=True)
    assert relative_error(logits, ref_logits) < 1e-4
    chosen = ref_logits.gather(-1, tokens[..., None])[..., 0]
    best = ref_logits.index_fill(-1, torch.tensor([5, 6], device=DEVICE), float("-inf")).max(-1).values
    assert torch.all((tokens == ref_tokens) | (best - chosen <= 1e-5 * best.abs().clamp_min(1)))


def test_every_site_replaced_and_no_recompiles(models):
    model, compiled = models
    inputs = on_device(vl_inputs(CONFIG, batch=1, kinds=("mixed",)).example())
    compiled.generate(**inputs, max_new_tokens=3, eos_token_id=[])
    graphs_before = dict(zoo.explain(compiled).graphs)
    for n in (2, 7):  # other prompt lengths and more decode steps: nothing new to compile
        ids = torch.randint(7, 100, (1, 5 + n), device=DEVICE)
        compiled.generate(ids, max_new_tokens=n, eos_token_id=[])
    patch_dim = model.config.vision.patch_dim
    for grid in ([[1, 4, 6]], [[2, 6, 4]], [[1, 2, 4], [1, 8, 2]]):  # other images, a video: same vision graph
        grid = torch.tensor(grid)
        compiled.encode_vision(torch.randn(int(grid.prod(-1).sum()), patch_dim, device=DEVICE), grid)
    report = zoo.explain(compiled)
    assert report.graphs == graphs_before, (report.graphs, graphs_before)
    text, vision = CONFIG["text_config"]["num_hidden_layers"], CONFIG["vision_config"]["depth"]
    for name, counts in report.per_graph:
        if name.startswith(("sample[", "greedy[", "inputs[")):  # a decode step's inputs, head, sampling: no layer
            # batch 1: the head's lm_head is a one-row GEMV with the final norm folded in (no eager norm kernels)
            head = name.endswith("[b=1]") and not name.startswith("inputs[")
            assert (counts.get("gemv", 0), counts.get("gemv_norm", 0)) == (head, head), (name, counts)
            continue
        if name.startswith("vision "):  # the encoder's embedding and mergers, compiled around its blocks: no layer
            assert not any(counts.values()), (name, counts)  # (the mergers' GELU is exact: no tanh epilogue)
            continue
        # a region: one layer's (block's) graph, run for every layer
        assert report.regions[name] == (vision if name == "vision" else text), (name, report.regions)
        assert counts["attention"] == 1, (name, counts)
        assert counts["rope"] == 1 and counts["rope_unpaired"] == 0, (name, counts)
        # the text layers' q_norm / k_norm fold into that kernel (one RoPE site each for q and k)
        assert counts["rope_norm"] == (0 if name == "vision" else 2), (name, counts)
        # where attention reads k and v from the caches (decode), the RoPE kernel writes them there itself
        assert counts["rope_cache"] == name.startswith("decode"), (name, counts)
        assert counts["linears"] == (0 if name == "vision" else 2), (name, counts)  # q/k/v, gate/up
        # batch-1 decode: qkv, o, gate_up, down as one-row GEMVs; a prompt has rows per token
        assert counts["gemv"] == (4 if name == "decode[b=1]" else 0), (name, counts)
        # ... with the input and post-attention norms, the SwiGLU product and both residual adds folded in
        folded = [counts.get(k, 0) for k in ("gemv_norm", "gemv_swiglu", "gemv_residual")]
        assert folded == ([2, 1, 2] if name == "decode[b=1]" else [0, 0, 0]), (name, counts)
        assert counts["gelu_epilogue"] == (name == "vision"), (name, counts)  # the vision MLP's fc1 + GELU (tanh)
        assert counts["attention_window"] == 1, (name, counts)  # windows (text), segments (vision)
        assert counts["masks_built"] == 0, (name, counts)
    assert {name for name, _ in report.per_graph} >= {"vision", "vision embed", "vision merger",
                                                       "vision deepstack merger", "prefill[b=1]", "decode[b=1]"}
    assert all(n == 1 for n in report.graphs.values()), report.graphs  # one graph each
    assert report.counts["attention"] == 1 and report.graph_breaks == 0
    every_layer = {f"layers.{i}" for i in range(text)} | {f"blocks.{i}" for i in range(vision)}
    assert set(report.sites["attention"]) == every_layer and set(report.sites["rope"]) == every_layer
    for kind in ("gemv", "gemv_norm", "gemv_swiglu", "gemv_residual"):
        head = {"lm_head"} if kind in ("gemv", "gemv_norm") else set()
        assert set(report.sites[kind]) == {f"layers.{i}" for i in range(text)} | head, (kind, report.sites[kind])
    assert all(report.sites[p][f"blocks.{i}"] == report.graphs["vision"] for p in ("attention", "rope")
               for i in range(vision)), report.sites
    text_report = str(report)
    live = report.cuda_graphs
    assert (live == 0) == (DEVICE.type == "cpu"), live  # decode and prompt graphs captured on CUDA only
    assert "attention" in text_report and "rope" in text_report and f"CUDA graphs live: {live}" in text_report


def test_sampling_runs_in_graph_and_is_seeded(models):
    _, compiled = models
    ids = torch.randint(7, 100, (2, 6), device=DEVICE)
    kw = dict(max_new_tokens=5, eos_token_id=[], do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    a, b = compiled.generate(ids, **kw), compiled.generate(ids, **kw)
    assert torch.equal(a, b) and a.shape == (2, 5)
    greedy = compiled.generate(ids, max_new_tokens=5, eos_token_id=[])
    assert torch.equal(compiled.generate(ids, max_new_tokens=5, eos_token_id=[], do_sample=True, top_k=1), greedy)


def test_bad_input_and_overflow(models):
    _, compiled = models
    with pytest.raises(ValueError, match="cache overflow: prompt 150 \\+ 20 new tokens > max_seq_len 160"):
        compiled.generate(torch.randint(7, 100, (1, 150), device=DEVICE), max_new_tokens=20)
    with pytest.raises(ValueError, match="batch 3 exceeds max_batch_size 2"):
        compiled.generate(torch.randint(7, 100, (3, 5), device=DEVICE), max_new_tokens=2)
    with pytest.raises(TypeError, match="zoo.compile supports"):
        zoo.compile(torch.nn.Linear(2, 2))


def test_compile_packs_weights_without_changing_the_reference():
    torch.manual_seed(1)
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(CONFIG)), seed=7).eval().to(DEVICE)
    ids = torch.randint(7, 100, (2, 9), device=DEVICE)
    with torch.no_grad():
        before = model(ids)
    compiled = zoo.compile(model, max_batch_size=2, max_seq_len=32)
    for layer in model.model.language_model.layers:  # q/k/v and gate/up now live in one buffer each
        a, m = layer.self_attn, layer.mlp
        assert a.q_proj.weight.untyped_storage().data_ptr() == a.v_proj.weight.untyped_storage().data_ptr()
        assert m.gate_proj.weight.untyped_storage().data_ptr() == m.up_proj.weight.untyped_storage().data_ptr()
    with torch.no_grad():
        assert torch.equal(model(ids), before)
    k_proj = model.model.language_model.layers[1].self_attn.k_proj
    k_proj.weight = torch.nn.Parameter(k_proj.weight.detach().clone())  # no longer in the packed buffer
    for run in (lambda: compiled(ids), lambda: compiled.generate(ids, max_new_tokens=2)):
        with pytest.raises(RuntimeError, match=r"layers\.1\.self_attn\.k_proj\.weight was replaced after zoo\.compile "
                                               r"packed it with q_proj, k_proj, v_proj"):
            run()


def test_two_configs_in_one_process_and_no_global_side_effects():
    """Two Qwen3-VL configs compiled in one process each equal their reference; compiling changes no Dynamo
    limit and draws nothing from torch's global RNG."""
    limits = {k: getattr(torch._dynamo.config, k) for k in ("recompile_limit", "cache_size_limit")
              if hasattr(torch._dynamo.config, k)}
    ids = torch.randint(7, 100, (1, 9), device=DEVICE)
    for seed, overrides in ((11, dict(layers=1, heads=2, kv_heads=1)), (12, dict(layers=2, head_dim=8,
                                                                                 mrope_section=(2, 1, 1)))):
        config = tiny_config_dict(v_depth=1, deepstack=(0,), **overrides)
        model = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(config))
        model = randomize_(model, seed=seed).eval().to(DEVICE)
        rng = torch.random.get_rng_state()
        compiled = zoo.compile(model, max_batch_size=1, max_seq_len=16)
        assert torch.equal(torch.random.get_rng_state(), rng)
        with torch.no_grad():
            assert relative_error(compiled(ids), model(ids)) < 1e-4
    assert limits == {k: getattr(torch._dynamo.config, k) for k in limits}


def test_a_first_image_of_one_merged_token_does_not_specialize_the_vision_graph():
    """A 2x2-patch image (one merged token) first: its features equal the reference's, and later images of other
    sizes reuse the same vision graph (Dynamo would otherwise specialize the size 1)."""
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(CONFIG)), seed=5).eval().to(DEVICE)
    compiled = zoo.compile(model, max_batch_size=1, max_seq_len=32)
    patch_dim = model.config.vision.patch_dim
    for grid in ([[1, 2, 2]], [[1, 4, 6]], [[1, 2, 2], [1, 2, 4]]):
        grid = torch.tensor(grid)
        pixels = torch.randn(int(grid.prod(-1).sum()), patch_dim, device=DEVICE)
        merged, levels = compiled.encode_vision(pixels, grid)
        with torch.no_grad():
            ref_merged, ref_levels = model.model.visual(pixels, grid.to(DEVICE))  # zoo takes a host grid too
        assert relative_error(merged, ref_merged) < 1e-4
        assert all(relative_error(a, b) < 1e-4 for a, b in zip(levels, ref_levels, strict=True))
    assert zoo.explain(compiled).graphs["vision"] == 1
