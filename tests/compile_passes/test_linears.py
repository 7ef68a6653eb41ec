"""The sibling-linears pass on its own: merges exactly the mm's (addmm's with biases) whose weights zoo packed
back to back, and the compiled module equals eager for random shapes."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._inductor.compile_fx import compile_fx

from compile_passes.linears import merge_sibling_mms
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


def compiled_with_pass(module):
    merged = []

    def run_pass(graph):
        merged.extend(merge_sibling_mms(graph))

    def backend(gm, example_inputs):
        return compile_fx(gm, example_inputs, config_patches={"joint_custom_pre_pass": run_pass,
                                                              "fx_graph_cache": False})
    return torch.compile(module, backend=backend, fullgraph=True), merged


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
