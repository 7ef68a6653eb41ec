"""Attention by structure (compile_passes/windows.py): the window ops equal zoo_ref's masked attention over
causal_mask, never read a slot no query sees (those hold NaN here), the segment op equals attention over the
vision's block-diagonal mask, and the rewrite leaves no mask in the graph."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from compile_passes import ZooPassManager
from compile_passes.windows import attend_by_window, masks_left, prompt_mask, window_mask
from tests.strategies import DEVICE
from zoo_ref.decoder import causal_mask, sliding_mask, token_window
from zoo_ref.layers import attention, relative_error
from zoo_ref.qwen3_vl.vision import mask_of_segments


@st.composite
def windows(draw, s_max=40):
    """Rows as one run of valid slots each, padding on either side: valid bool [B, S]."""
    b, s = draw(st.integers(1, 4)), draw(st.integers(2, s_max))
    valid = torch.zeros(b, s, dtype=torch.bool)
    for row in range(b):
        start = draw(st.integers(0, s - 1))
        valid[row, start:draw(st.integers(start + 1, s))] = True
    return valid


@settings(max_examples=40, deadline=None)
@given(valid=windows(), data=st.data())
def test_window_mask_is_causal_mask_of_the_rows_windows(valid, data):
    s = valid.shape[1]
    slots = torch.tensor(sorted(data.draw(st.lists(st.integers(0, s - 1), min_size=1, max_size=5))))
    start, end = token_window(valid)
    assert torch.equal(window_mask(start, end, slots, s), causal_mask(valid, slots))
    assert torch.equal(prompt_mask(start, end, s, True), causal_mask(valid, torch.arange(s)))


def _qkv(b, t, s, hkv, n_rep, d, g):
    q = torch.randn(b, t, hkv * n_rep, d, generator=g).transpose(1, 2)
    return q, torch.randn(b, hkv, s, d, generator=g), torch.randn(b, hkv, s, d, generator=g)


def _poison_unseen(k, v, mask):
    seen = mask.any(-2)[..., None]  # [B, 1, S, 1]
    return k.masked_fill(~seen, float("nan")), v.masked_fill(~seen, float("nan"))


@settings(max_examples=30, deadline=None)
@given(valid=windows(), hkv=st.sampled_from([1, 2]), n_rep=st.sampled_from([1, 3]), window=st.sampled_from([0, 1, 4]),
       seed=st.integers(0, 99))
def test_prompt_attention_equals_reference(valid, hkv, n_rep, window, seed):
    """Padded prompts, a sliding-window layer's limit or none."""
    b, t = valid.shape
    q, k, v = _qkv(b, t, t, hkv, n_rep, 8, torch.Generator().manual_seed(seed))
    start, end = token_window(valid)
    mask = causal_mask(valid, torch.arange(t))
    if window:
        mask = sliding_mask(mask, torch.arange(t), window)
    want = attention(q, k, v, mask, 0.3)
    k, v = _poison_unseen(k, v, mask)
    out = torch.ops.zoo.prompt_attention(q, k, v, start, end, 0.3, True, window)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(t=st.integers(1, 40), hkv=st.sampled_from([1, 2]), n_rep=st.sampled_from([1, 3]), seed=st.integers(0, 99))
def test_unpadded_prompt_attention_is_plain_causal(t, hkv, n_rep, seed):
    q, k, v = _qkv(2, t, t, hkv, n_rep, 8, torch.Generator().manual_seed(seed))
    start, end = torch.zeros(2, dtype=torch.long), torch.full((2,), t)
    want = attention(q, k, v, causal_mask(torch.ones(2, t, dtype=torch.bool), torch.arange(t)), 0.3)
    torch.testing.assert_close(torch.ops.zoo.prompt_attention(q, k, v, start, end, 0.3, False), want, rtol=1e-5,
                               atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(valid=windows(), hkv=st.sampled_from([1, 2]), n_rep=st.sampled_from([1, 3]), extra=st.integers(0, 30),
       window=st.sampled_from([0, 1, 4]), data=st.data(), seed=st.integers(0, 99))
def test_window_attention_equals_reference_over_a_larger_buffer(valid, hkv, n_rep, extra, window, data, seed):
    """Keys in a static buffer `extra` slots longer than the windows: what lies beyond is NaN and never read;
    a sliding-window layer's limit or none."""
    b, s = valid.shape
    slots = torch.tensor(sorted(data.draw(st.lists(st.integers(0, s - 1), min_size=1, max_size=20))))
    q, k, v = _qkv(b, len(slots), s + extra, hkv, n_rep, 8, torch.Generator().manual_seed(seed))
    start, end = token_window(valid)
    mask = causal_mask(torch.cat([valid, valid.new_zeros(b, extra)], 1), slots)
    if window:
        mask = sliding_mask(mask, slots, window)
    want = attention(q, k, v, mask, 0.3)
    k, v = _poison_unseen(k, v, mask)
    out = torch.ops.zoo.window_attention(q, k, v, start, end, slots, 0.3, window)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_rewrite_takes_the_window_and_drops_the_mask():
    """The pass on a traced graph: both attention sites take the window, no mask op is left; without the
    attention pass the masks stay (and explain would say so)."""
    def fn(q, k, v, start, end, slots):
        a = torch.ops.zoo.attention(q, k, v, torch.ops.zoo.prompt_mask(start, end, q.shape[2], True), 0.5)
        return a + torch.ops.zoo.attention(q, k, v, torch.ops.zoo.window_mask(start, end, slots, k.shape[2]), 0.5)
    args = (*_qkv(2, 3, 3, 1, 2, 4, torch.Generator().manual_seed(0)), torch.tensor([0, 1]), torch.tensor([3, 3]),
            torch.arange(3))
    gm = make_fx(fn)(*args)
    assert masks_left(gm.graph) == 2
    assert len(attend_by_window(gm.graph)) == 2 and masks_left(gm.graph) == 0
    gm.recompile()
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch.ops.zoo.window_attention.default in targets and torch.ops.zoo.prompt_attention.default in targets
    torch.testing.assert_close(gm(*args), fn(*args))


def test_rewrite_folds_a_sliding_mask_into_the_window():
    """A sliding-window layer: zoo::sliding_mask over the window / prompt mask becomes the attention's window
    argument; no mask op is left."""
    def fn(q, k, v, start, end, slots):
        prompt = torch.ops.zoo.sliding_mask(torch.ops.zoo.prompt_mask(start, end, q.shape[2], True), slots, 2)
        window = torch.ops.zoo.sliding_mask(torch.ops.zoo.window_mask(start, end, slots, k.shape[2]), slots, 2)
        return torch.ops.zoo.attention(q, k, v, prompt, 0.5) + torch.ops.zoo.attention(q, k, v, window, 0.5)
    args = (*_qkv(2, 3, 3, 1, 2, 4, torch.Generator().manual_seed(0)), torch.tensor([0, 1]), torch.tensor([3, 3]),
            torch.arange(3))
    gm = make_fx(fn)(*args)
    assert masks_left(gm.graph) == 4
    new = attend_by_window(gm.graph)
    assert len(new) == 2 and masks_left(gm.graph) == 0 and all(n.args[-1] == 2 for n in new)
    gm.recompile()
    torch.testing.assert_close(gm(*args), fn(*args))


def test_pass_manager_reports_masks_left_when_attention_is_off():
    manager = ZooPassManager(passes=("rope",))
    gm = make_fx(lambda s, e: torch.ops.zoo.prompt_mask(s, e, 4, True).sum())(torch.tensor([0]), torch.tensor([4]))
    manager(gm.graph)
    assert manager.log[-1][1]["masks_built"] == 1


@pytest.mark.parametrize("op", ["prompt", "window"])
def test_outputs_are_laid_out_for_the_output_projection(op):
    q, k, v = _qkv(2, 3, 3, 1, 2, 4, torch.Generator().manual_seed(0))
    start, end = torch.tensor([0, 1]), torch.tensor([3, 3])
    out = (torch.ops.zoo.prompt_attention(q, k, v, start, end, 0.5, True) if op == "prompt" else
           torch.ops.zoo.window_attention(q, k, v, start, end, torch.arange(3), 0.5))
    assert out.shape == (2, 2, 3, 4) and out.transpose(1, 2).is_contiguous()


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4), heads=st.sampled_from([1, 3]),
       seed=st.integers(0, 99))
def test_segment_attention_equals_reference(lengths, heads, seed):
    """Vision: each frame's patches attend among themselves; q/k/v are views of one [N, 3, H, D] projection."""
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    n = int(cu[-1])
    q, k, v = (t.transpose(0, 1)[None] for t in torch.randn(n, 3, heads, 8, generator=g).unbind(1))
    want = attention(q, k, v, mask_of_segments(cu, n), 0.3)
    out = torch.ops.zoo.segment_attention(q, k, v, cu, max(lengths), 0.3)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    assert out.transpose(1, 2).is_contiguous()


@settings(max_examples=10, deadline=None)
@given(lengths=st.one_of(st.lists(st.integers(1, 300), min_size=1, max_size=4),  # varlen (or one segment)
                         st.tuples(st.integers(1, 200), st.integers(2, 6)).map(lambda lc: [lc[0]] * lc[1])),  # equal
       seed=st.integers(0, 99))
def test_cuda_bf16_segment_attention_equals_the_fp32_reference(lengths, seed):
    """Vision on CUDA: equal segments (a video's frames) as one SDPA batch, others through FlashAttention varlen;
    bf16 against the fp32 oracle, output laid out for the projection. GPU runs only."""
    if DEVICE.type != "cuda":
        pytest.skip("CUDA kernels: run with ZOO_TEST_CUDA=1 on a GPU")
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    n = int(cu[-1])
    q, k, v = (t.transpose(0, 1)[None] for t in torch.randn(n, 3, 4, 64, generator=g).unbind(1))
    want = attention(q, k, v, mask_of_segments(cu, n), 0.125)
    q, k, v = (x.to(DEVICE, torch.bfloat16) for x in (q, k, v))
    out = torch.ops.zoo.segment_attention(q, k, v, cu.to(DEVICE), max(lengths), 0.125)
    assert relative_error(out.float().cpu(), want) < 2e-2
    assert out.shape == want.shape and out.transpose(1, 2).is_contiguous()


@settings(max_examples=10, deadline=None)
@given(valid=windows(s_max=300), window=st.sampled_from([0, 1, 7, 64]), seed=st.integers(0, 99))
def test_cuda_bf16_prompt_attention_equals_the_fp32_reference(valid, window, seed):
    """The CUDA paths the fp32 tests above do not reach: FlashAttention varlen over padded prompts (and sliding
    windows, where this torch's varlen takes window_size), bf16 against the fp32 oracle. GPU runs only."""
    if DEVICE.type != "cuda":
        pytest.skip("CUDA kernels: run with ZOO_TEST_CUDA=1 on a GPU")
    b, t = valid.shape
    q, k, v = (x.to(DEVICE) for x in _qkv(b, t, t, 2, 3, 64, torch.Generator().manual_seed(seed)))
    start, end = (x.to(DEVICE) for x in token_window(valid))
    mask = causal_mask(valid, torch.arange(t)).to(DEVICE)
    if window:
        mask = sliding_mask(mask, torch.arange(t, device=DEVICE), window)
    want = attention(q, k, v, mask, 0.125)
    out = torch.ops.zoo.prompt_attention(*(x.bfloat16() for x in (q, k, v)), start, end, 0.125, True, window)
    assert relative_error(out.float(), want) < 2e-2
