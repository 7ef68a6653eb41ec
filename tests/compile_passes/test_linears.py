"""The linears passes on their own: sibling merging rewrites exactly the mm's (addmm's with biases) whose weights zoo
packed back to back, one-row GEMVs exactly the linears whose input is statically one row, and the compiled module
equals eager for random shapes."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._inductor.compile_fx import compile_fx

from compile_passes.linears import MIN_K, few_rows_mms, merge_sibling_mms, one_row_gemvs
from zoo.packing import pack_linears
from zoo_ref.layers import relative_error


class Siblings(nn.Module):
    def __init__(self, d, outs, bias_last=False, bias=False):
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(d, n, bias=bias or (bias_last and i == len(outs) - 1))
                                  for i, n in enumerate(outs))

    def forward(self, x):  # x: [B, T, d]; every linear reads x, one reads x twice
        ys = [lin(x) for lin in self.lins]
        return torch.cat([y.sum(-1, keepdim=True) for y in ys] + [ys[0] * 2], -1)


def compiled_with_pass(module, gemvs=None, few=None, dynamic=False):
    merged = []

    def run_pass(graph):
        merged.extend(merge_sibling_mms(graph))
        if gemvs is not None:
            gemvs.extend(one_row_gemvs(graph))
        if few is not None:
            few.extend(few_rows_mms(graph))

    def backend(gm, example_inputs):
        return compile_fx(gm, example_inputs, config_patches={"joint_custom_pre_pass": run_pass,
                                                              "fx_graph_cache": False})
    return torch.compile(module, backend=backend, fullgraph=True, dynamic=dynamic), merged


@settings(max_examples=6)
@given(outs=st.lists(st.integers(1, 24), min_size=2, max_size=4), d=st.integers(1, 20), b=st.integers(1, 3),
       t=st.integers(1, 4), pack=st.booleans(), bias=st.booleans(), seed=st.integers(0, 999))
def test_merges_packed_siblings_only_and_matches_eager(outs, d, b, t, pack, bias, seed):
    torch.manual_seed(seed)
    torch._dynamo.reset()
    m = Siblings(d, outs, bias=bias).eval()
    x = torch.randn(b, t, d)
    with torch.no_grad():
        before = m(x)
        if pack:
            assert pack_linears(*m.lins)
            assert torch.equal(m(x), before)  # packing moves weights, changes no value
        compiled, merged = compiled_with_pass(m)
        out = compiled(x)
    assert relative_error(out, before) < 1e-5
    assert len(merged) == (1 if pack else 0)


def test_mixed_biases_or_mismatched_inputs_are_not_packed():
    assert not pack_linears(nn.Linear(4, 3), nn.Linear(4, 2, bias=False))  # one addmm, one mm
    assert not pack_linears(nn.Linear(4, 3, bias=False), nn.Linear(5, 2, bias=False))
    m = Siblings(8, [4, 6, 5], bias_last=True)
    assert not pack_linears(*m.lins)
    assert pack_linears(*m.lins[:2])  # the bias-free pair packs; the pass merges those two only
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        compiled, merged = compiled_with_pass(m)
        torch._dynamo.reset()
        assert relative_error(compiled(x), m(x)) < 1e-5
    assert len(merged) == 1


@settings(max_examples=4)
@given(outs=st.lists(st.integers(2, 24), min_size=2, max_size=3), d=st.integers(17, 40), rows=st.integers(1, 3),
       pack=st.booleans(), bias=st.booleans(), seed=st.integers(0, 999))
def test_one_row_linears_become_gemvs_and_match_eager(outs, d, rows, pack, bias, seed):
    """With one row (a batch-1 decode), every linear (packed siblings merged first) becomes zoo::gemv; with more
    rows none does. (Degenerate ones Inductor itself turns into elementwise ops, no mm left: K == 1, and on CPU N == 1
    or an addmm with K, N <= 16.)"""
    torch.manual_seed(seed)
    torch._dynamo.reset()
    m = Siblings(d, outs, bias=bias).eval()
    x = torch.randn(1, rows, d)
    gemvs = []
    with torch.no_grad():
        before = m(x)
        if pack:
            assert pack_linears(*m.lins)
        compiled, merged = compiled_with_pass(m, gemvs)
        out = compiled(x)
    assert relative_error(out, before) < 1e-5
    assert len(gemvs) == (0 if rows > 1 else 1 if pack else len(outs)), (gemvs, merged)


@pytest.mark.parametrize("rows,dynamic", [(2, False), (16, False), (17, False), (17, True), (1, True)])
def test_long_reductions_of_few_rows_become_few_rows_mm_and_match_eager(rows, dynamic):
    """A linear with K >= 16384 becomes zoo::few_rows_mm when its rows are not statically more than 16 (a symbolic
    batch included: the op picks its kernel from the real rows); one row stays a GEMV (Dynamo keeps a size of 1
    static), a short K stays an mm."""
    torch.manual_seed(rows)
    torch._dynamo.reset()
    x = torch.randn(1, rows, MIN_K)
    for module, inputs, want in ((Siblings(MIN_K, [5], bias=rows % 2 == 0), x, 1 < rows and (rows <= 16 or dynamic)),
                                 (Siblings(64, [5]), x[..., :64], False)):
        gemvs, few = [], []
        with torch.no_grad():
            compiled, _ = compiled_with_pass(module.eval(), gemvs, few, dynamic=dynamic)
            assert relative_error(compiled(inputs), module(inputs)) < 1e-5
        assert len(few) == want and len(gemvs) == (rows == 1), (few, gemvs)
        torch._dynamo.reset()
