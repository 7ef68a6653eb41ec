"""A residual added to a linear at a graph's end folds into the matmul (addmm with the residual, plus the linear's
bias, as C): 2-D and 3-D inputs, with and without bias. A sum that is read inside the graph, a broadcast residual
and a product read twice stay as they are; the compiled module equals eager."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.compile_passes.test_gemv_fusion import compiled_with_manager
from zoo_ref.layers import relative_error, rms_norm


class Ends(nn.Module):
    def __init__(self, d, n, bias):
        super().__init__()
        self.a, self.b, self.c = (nn.Linear(d, n, bias=bias) for _ in range(3))

    def forward(self, x, r, row):  # x [..., d], r [..., n], row [n]
        folded = r + self.a(x)  # a graph output: the residual becomes addmm's C
        inner = r + self.b(x)  # read by the norm below: Inductor fuses the add into it
        broadcast = row + self.c(x)  # not the product's shape
        twice = self.c(x)  # the product is read twice
        return folded, rms_norm(inner, row, 1e-6), broadcast, r + twice, twice * 2


# sizes > 16: Inductor turns a CPU addmm with K, N <= 16 into elementwise ops before any pass sees it
@settings(max_examples=8, deadline=None)
@given(d=st.integers(17, 40), n=st.sampled_from([24, 32]), lead=st.sampled_from([(5,), (2, 3), (1, 1)]),
       bias=st.booleans(), seed=st.integers(0, 999))
def test_a_graph_ending_residual_folds_into_its_matmul(d, n, lead, bias, seed):
    torch.manual_seed(seed)
    torch._dynamo.reset()
    m = Ends(d, n, bias).eval()
    x, r, row = torch.randn(*lead, d), torch.randn(*lead, n), torch.randn(n)
    with torch.no_grad():
        want = m(x, r, row)
        compiled, manager = compiled_with_manager(m)
        got = compiled(x, r, row)
    for a, b in zip(got, want):
        assert relative_error(a, b) < 1e-5
    (_, counts), = manager.log
    one_row = x.numel() == d  # one row: a GEMV, whose residual fold is gemv_residual (test_gemv_fusion)
    assert counts["gemm_residual"] == (0 if one_row else 1), counts
