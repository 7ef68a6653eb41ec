"""zoo.compile(MLA) == zoo_ref: mixed batches of prefill-with-history and decode, both modes. On CPU in CI;
ZOO_TEST_CUDA=1 runs the same on the GPU, where lengths on the CPU take the no-sync path."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from zoo.cuda_graphs import packed_bucket
from zoo_ref.deepseek import MLA, MLAConfig
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl.tiny import randomize_

CONFIG = {"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "q_lora_rank": 32,
          "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
          "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 64, "mscale": 1.0,
                           "mscale_all_dim": 1.0}}
MAX_LEN = 48
DEVICE = torch.device("cuda" if os.environ.get("ZOO_TEST_CUDA") else "cpu")


@pytest.fixture(scope="module")
def models():
    mla = randomize_(MLA(MLAConfig.from_dict(CONFIG)), seed=2).to(DEVICE).eval()
    return mla, zoo.compile(mla)


@settings(max_examples=12)
@given(data=st.data(), mode=st.sampled_from(["absorb", "naive"]), seed=st.integers(0, 2 ** 16),
       lengths_on=st.sampled_from(["cpu", DEVICE.type]))
def test_mixed_batches_then_decode_match_reference(models, data, mode, seed, lengths_on):
    mla, compiled = models
    b = 3  # fixed batch: one graph per (mode, T class)
    t = data.draw(st.integers(2, 6), label="T")
    lens = torch.tensor(data.draw(st.lists(st.integers(0, t), min_size=b, max_size=b), label="seq_lens"),
                        device=lengths_on)
    starts = torch.tensor(data.draw(st.lists(st.integers(0, 20), min_size=b, max_size=b), label="start_pos"),
                          device=lengths_on)
    g = torch.Generator().manual_seed(seed)
    ref_cache = mla.new_cache(b, MAX_LEN)
    ref_cache.kv.copy_(torch.randn(ref_cache.kv.shape, generator=g))  # copy_ moves them to DEVICE
    ref_cache.pe.copy_(torch.randn(ref_cache.pe.shape, generator=g))
    cache = mla.new_cache(b, MAX_LEN)
    cache.kv.copy_(ref_cache.kv)
    cache.pe.copy_(ref_cache.pe)
    x = torch.rand(b, t, CONFIG["hidden_size"], generator=g).to(DEVICE)
    with torch.no_grad():
        ref = mla(x, ref_cache, starts, lens, mode=mode)
    out = compiled(x, cache, starts, lens, mode=mode)
    assert relative_error(out, ref) < 1e-4
    torch.testing.assert_close(cache.kv, ref_cache.kv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cache.pe, ref_cache.pe, rtol=1e-5, atol=1e-6)
    pos, one = starts + lens, torch.ones(b, dtype=torch.long, device=lengths_on)
    for _ in range(3):  # chained decode: outputs fed back
        with torch.no_grad():
            ref = mla(ref[:, -1:].contiguous() if ref.shape[1] else x[:, :1], ref_cache, pos, one, mode=mode)
        out = compiled(out[:, -1:].contiguous() if out.shape[1] else x[:, :1], cache, pos, one, mode=mode)
        assert relative_error(out, ref) < 1e-4
        pos = pos + 1


def test_sites_replaced_and_no_recompiles_in_decode(models):
    mla, compiled = models
    cache = mla.new_cache(3, MAX_LEN)
    one = torch.ones(3, dtype=torch.long)
    compiled(torch.rand(3, 1, 64, device=DEVICE), cache, torch.tensor([1, 2, 3]), one)
    before = dict(zoo.explain(compiled).graphs)
    for i in range(5):
        compiled(torch.rand(3, 1, 64, device=DEVICE), cache, torch.tensor([4, 5, 6]) + i, one)
    report = zoo.explain(compiled)
    assert report.graphs == before
    # every compiled function's seconds: Dynamo tracing beside Inductor's compile (or cache load)
    assert set(report.trace_seconds) == set(report.compile_seconds) == set(report.graphs), report
    assert all(s > 0 for s in report.compile_seconds.values()) and all(s >= 0 for s in report.trace_seconds.values())
    for name, counts in report.per_graph:
        assert counts["rope"] == 1 and counts["rope_unpaired"] == 0, (name, counts)
        assert counts["attention" if "naive" in name else "attention_mla_latent"] == 1, (name, counts)
        # absorbed: driven by the lengths, no mask; naive keeps its mask (keys expanded from the whole cache)
        assert (counts["attention_window"], counts["masks_built"]) == ((0, 1) if "naive" in name else (1, 0)), \
            (name, counts)
        assert counts["linears"] == 1, (name, counts)  # q_a_proj + kv_a_proj_with_mqa: one mm
        # absorbed: W_UV writes o_proj's layout itself (naive has no W_UV)
        assert counts["absorb_values"] == ("naive" not in name), (name, counts)


@pytest.mark.parametrize("lengths_on", ["cpu", DEVICE.type])
@pytest.mark.parametrize("t", [1, 3])
def test_overflow_refused_cache_intact(models, lengths_on, t):
    mla, compiled = models
    cache = mla.new_cache(1, 8)
    cache.kv.normal_()
    cache.pe.normal_()
    before = cache.kv.clone(), cache.pe.clone()
    x = torch.rand(1, t, 64, device=DEVICE)
    with pytest.raises(ValueError, match="cache overflow"):
        compiled(x, cache, torch.tensor([8 - t + 1], device=lengths_on))
    with pytest.raises(ValueError, match="need 0 <= seq_lens <= T"):
        compiled(x, cache, torch.tensor([0], device=lengths_on), torch.tensor([t + 1], device=lengths_on))
    assert torch.equal(cache.kv, before[0]) and torch.equal(cache.pe, before[1])
    compiled(x, cache, torch.tensor([8 - t], device=lengths_on))  # the last slots still fit
    assert not torch.equal(cache.kv, before[0])


def test_new_cache_where_a_freed_one_lived(models):
    """The allocator hands a new cache the address of a freed one: its graph must not be the old cache's."""
    mla, compiled = models
    g = torch.Generator().manual_seed(0)
    for max_len in (8, 16, 8, 24, 16):
        cache, ref_cache = mla.new_cache(1, max_len), mla.new_cache(1, max_len)
        cache.kv.copy_(torch.randn(cache.kv.shape, generator=g))
        cache.pe.copy_(torch.randn(cache.pe.shape, generator=g))
        ref_cache.kv.copy_(cache.kv)
        ref_cache.pe.copy_(cache.pe)
        x, start = torch.rand(1, 1, 64, generator=g).to(DEVICE), torch.tensor([max_len - 1])
        out = compiled(x, cache, start)
        with torch.no_grad():
            ref = mla(x, ref_cache, start)
        assert relative_error(out, ref) < 1e-4
        torch.testing.assert_close(cache.kv, ref_cache.kv, rtol=1e-5, atol=1e-6)
        del cache, ref_cache


def test_weights_updated_in_place_or_refused(models):
    """zoo.compile packed q_a_proj + kv_a_proj_with_mqa into one buffer that its graphs read as one: new weights
    loaded in place are used; a replaced weight is refused (Dynamo would not notice, the graph would read the
    old buffer)."""
    mla, compiled = models
    saved = {k: v.clone() for k, v in mla.state_dict().items()}
    packed = mla.kv_a_proj_with_mqa.weight
    g = torch.Generator().manual_seed(1)
    x, start = torch.rand(1, 2, 64, generator=g).to(DEVICE), torch.tensor([3])
    try:
        mla.load_state_dict({k: v * 1.5 for k, v in saved.items()})  # copies into the packed buffer
        cache, ref_cache = mla.new_cache(1, 8), mla.new_cache(1, 8)
        with torch.no_grad():
            ref = mla(x, ref_cache, start)
        assert relative_error(compiled(x, cache, start), ref) < 1e-4
        mla.kv_a_proj_with_mqa.weight = torch.nn.Parameter(packed.detach().clone())
        with pytest.raises(RuntimeError, match="kv_a_proj_with_mqa.weight was replaced after zoo.compile"):
            compiled(x, cache, start)
    finally:
        mla.kv_a_proj_with_mqa.weight = packed
        mla.load_state_dict(saved)


def test_a_second_mla_config_in_the_same_process(models):
    """Another softmax scale, rope and widths beside the module's compiled MLA: each compiled function has its
    own code object, so nothing is shared, re-traced or recompiled (a float scale used to come back as a tensor)."""
    mla, compiled = models
    other_config = {**CONFIG, "hidden_size": 48, "num_attention_heads": 2, "kv_lora_rank": 16, "q_lora_rank": None,
                    "rope_scaling": None, "qk_nope_head_dim": 8}
    other = randomize_(MLA(MLAConfig.from_dict(other_config)), seed=9).to(DEVICE).eval()
    assert other.scale != mla.scale
    other_compiled = zoo.compile(other)
    for m, c, width in ((other, other_compiled, 48), (mla, compiled, 64)):
        cache, ref_cache = m.new_cache(2, 16), m.new_cache(2, 16)
        x = torch.rand(2, 3, width, generator=torch.Generator().manual_seed(width)).to(DEVICE)
        start = torch.tensor([2, 0])
        with torch.no_grad():
            ref = m(x, ref_cache, start)
        assert relative_error(c(x, cache, start), ref) < 1e-4
    assert all(n == 1 for n in zoo.explain(other_compiled).graphs.values())


def caches_with_nan_past(mla, batch, slot):
    """Two equal caches (zoo's, the reference's) with NaN in every row's slots from `slot` on."""
    caches = mla.new_cache(batch, MAX_LEN), mla.new_cache(batch, MAX_LEN)
    for c in caches:
        c.kv[:, slot:] = float("nan")
        c.pe[:, slot:] = float("nan")
    return caches


@pytest.mark.parametrize("mode", ["absorb", "naive"])
def test_nan_in_slots_beyond_the_call_is_never_read(models, mode):
    """A user's cache with NaN past every row's range: the reference never reads those slots; neither may zoo."""
    mla, compiled = models
    cache, ref_cache = caches_with_nan_past(mla, 2, 10)
    x = torch.rand(2, 3, 64, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    start, lens = torch.tensor([4, 0]), torch.tensor([3, 2])
    with torch.no_grad():
        ref = mla(x, ref_cache, start, lens, mode=mode)
    out = compiled(x, cache, start, lens, mode=mode)
    assert torch.isfinite(out).all() and relative_error(out, ref) < 1e-4
    one = torch.ones(2, dtype=torch.long)
    out = compiled(x[:, :1], cache, start + lens, one, mode=mode)  # decode over the same cache
    with torch.no_grad():
        ref = mla(x[:, :1], ref_cache, start + lens, one, mode=mode)
    assert torch.isfinite(out).all() and relative_error(out, ref) < 1e-4


def test_packed_prompt_reads_its_cache_rows_in_place(models):
    """Absorbed prefill with lengths on the host runs packed: only the real tokens (an empty row and padding left
    out), each a batch row of one query over its own cache row. Same output and cache as the reference, NaN past
    every row never read, and the attention reads the cache rows in place (no gathered copy, no mask)."""
    mla, compiled = models
    cache, ref_cache = caches_with_nan_past(mla, 3, 20)
    x = torch.rand(3, 6, 64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    start, lens = torch.tensor([9, 0, 14]), torch.tensor([6, 0, 4])
    with torch.no_grad():
        ref = mla(x, ref_cache, start, lens)
    # a call that writes nothing leaves NaN in the graph's input past this call's T (same graph on CUDA: 16 packed
    # tokens, T bucket 8): the packed step must not read it
    compiled(torch.full((3, 8, 64), float("nan"), device=DEVICE), cache, start, torch.zeros(3, dtype=torch.long))
    out = compiled(x, cache, start, lens)
    assert torch.isfinite(out).all() and relative_error(out, ref) < 1e-4
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(out[2, 4:], torch.zeros_like(out[2, 4:]))
    torch.testing.assert_close(cache.kv, ref_cache.kv, rtol=1e-5, atol=1e-6, equal_nan=True)
    counts = dict(zoo.explain(compiled).per_graph)["mla[absorb, packed]"]
    assert (counts["attention_window"], counts["attention_rows"], counts["masks_built"]) == (1, 1, 0), counts
    assert counts["absorb_values"] == 1, counts


def test_no_packing_without_the_attention_pass(models):
    """Without the attention pass nothing would turn the packed step's row gather into the kernel's row index (a
    [tokens, S] copy of the latents): such a compile keeps the padded path."""
    mla, _ = models
    compiled = zoo.compile(mla, passes=("rope",))
    cache, ref_cache = mla.new_cache(3, MAX_LEN), mla.new_cache(3, MAX_LEN)
    x = torch.rand(3, 6, 64, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    start, lens = torch.tensor([9, 0, 14]), torch.tensor([6, 0, 4])
    with torch.no_grad():
        ref = mla(x, ref_cache, start, lens)
    assert relative_error(compiled(x, cache, start, lens), ref) < 1e-4
    assert "mla[absorb, packed]" not in zoo.explain(compiled).graphs


def test_packed_bucket():
    """Packed token counts pad to a multiple of a sixteenth of their octave, at least 16: under ~6% padding."""
    assert [packed_bucket(n) for n in (1, 16, 17, 65, 705, 1024, 1025, 5000)] == [16, 16, 32, 80, 736, 1024, 1088,
                                                                                  5120]


def test_batch_one_decode_runs_its_linears_as_gemvs():
    """A model compiled for batch-1 decode (the seed's decode task): every linear of the step is one row, so the
    linears pass runs each as zoo::gemv; the chained steps still equal the reference."""
    mla = randomize_(MLA(MLAConfig.from_dict(CONFIG)), seed=3).to(DEVICE).eval()
    compiled = zoo.compile(mla)
    cache, ref_cache = mla.new_cache(1, MAX_LEN), mla.new_cache(1, MAX_LEN)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, CONFIG["hidden_size"], generator=g).to(DEVICE)
    out = ref = x
    for pos in range(5):
        start = torch.tensor([pos])
        with torch.no_grad():
            ref = mla(ref.contiguous(), ref_cache, start)
        out = compiled(out.contiguous(), cache, start)
        assert relative_error(out, ref) < 1e-4, pos
    (name, counts), = zoo.explain(compiled).per_graph
    # q_a + kv_a (packed, one GEMV), q_b, o_proj; absorbed attention's kv_b products are einsums, not linears
    assert name == "mla[absorb, decode]" and counts["gemv"] == 3 and counts["linears"] == 1, (name, counts)
    assert counts["gemv_norm"] == 1, counts  # q_a_layernorm folded into q_b's GEMV


class EagerGraphs:
    """GraphRunner's interface without CUDA: run() calls the step on the graph's input buffers it is given (what a
    replay reads), so the CPU suite checks what CompiledMLA stages into them and which graphs it keeps and drops."""

    def __init__(self):
        self.runs, self.dropped = [], []

    def run(self, key, fn, *args, state=None):
        self.runs.append(key)
        return fn(*args)

    def drop(self, key):
        self.dropped.append(key)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the real CUDA graphs run in the tests above")
def test_graph_path_stages_each_call_into_its_caches_buffers():
    """Decode through the graph path (its buffers, here run eagerly): chained steps on caches of several sizes, one
    freed where the next one lands, equal the reference; one graph per cache, a freed cache's graph dropped."""
    mla = randomize_(MLA(MLAConfig.from_dict(CONFIG)), seed=6).eval()
    compiled = zoo.compile(mla)
    compiled.cuda_graphs, compiled.graphs = True, EagerGraphs()
    g, generations = torch.Generator().manual_seed(8), []
    for max_len in (8, 16, 8):
        cache, ref_cache = mla.new_cache(2, max_len), mla.new_cache(2, max_len)
        cache.kv.copy_(torch.randn(cache.kv.shape, generator=g))
        cache.pe.copy_(torch.randn(cache.pe.shape, generator=g))
        ref_cache.kv.copy_(cache.kv)
        ref_cache.pe.copy_(cache.pe)
        out = ref = torch.rand(2, 1, 64, generator=g)
        for pos in range(3):
            start, one = torch.tensor([pos, max_len - 4 + pos]), torch.ones(2, dtype=torch.long)
            with torch.no_grad():
                ref = mla(ref, ref_cache, start, one)
            out = compiled(out, cache, start, one)
            assert relative_error(out, ref) < 1e-4, (max_len, pos)
        torch.testing.assert_close(cache.kv, ref_cache.kv, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="cache overflow"):  # flags read back; nothing written
            compiled(out, cache, torch.tensor([0, max_len]), one)
        generations.append(set(compiled.graphs.runs))
        compiled.graphs.runs.clear()
        del cache, ref_cache
    assert all(len(keys) == 1 and next(iter(keys))[:2] == ("absorb", 1) for keys in generations), generations
    # each cache's graph is dropped once it is freed (before a new cache can take its address), in order
    assert compiled.graphs.dropped == [next(iter(keys)) for keys in generations[:2]], generations
