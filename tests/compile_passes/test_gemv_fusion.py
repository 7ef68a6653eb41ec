"""The GEMV fusions on their own: in a one-row step the RMSNorm before a linear, the SwiGLU product before it and the
residual add after it fold into zoo::gemv_fused; a per-head norm (not over the whole row) and anything with more
than one row stay as they are; the compiled module equals eager for random shapes."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._inductor.compile_fx import compile_fx

from compile_passes.manager import ZooPassManager
from zoo.packing import pack_linears
from zoo_ref.decoder import MLP, DecoderConfig
from zoo_ref.layers import RMSNorm, relative_error


# sizes > 16: Inductor turns a CPU addmm with K, N <= 16 into elementwise ops before any pass sees it
class Block(nn.Module):
    """A decoder layer's linears around their norms and residual adds, plus a linear after a per-head norm."""

    def __init__(self, d, f, heads, bias):
        super().__init__()
        c = DecoderConfig(vocab_size=8, hidden_size=d, intermediate_size=f, num_hidden_layers=1, num_attention_heads=1,
                          num_key_value_heads=1, head_dim=d, rope_theta=1e4)
        self.heads = heads
        self.o = nn.Linear(d, d, bias=bias)
        self.norm, self.head_norm = RMSNorm(d), RMSNorm(d // heads)
        self.mlp = MLP(c)
        self.after_heads = nn.Linear(d, 3, bias=False)
        for m in (self.norm, self.head_norm):
            nn.init.normal_(m.weight)

    def forward(self, x, r):  # x, r: [B, T, d]
        h = r + self.o(x)
        h = h + self.mlp(self.norm(h))
        per_head = self.head_norm(x.view(*x.shape[:2], self.heads, -1)).view(*x.shape[:2], -1)
        return h, self.after_heads(per_head)


def compiled_with_manager(module):
    manager = ZooPassManager(passes=("linears",))

    def backend(gm, example_inputs):
        return compile_fx(gm, example_inputs, config_patches={"joint_custom_pre_pass": manager,
                                                              "fx_graph_cache": False})
    return torch.compile(module, backend=backend, fullgraph=True), manager


@settings(max_examples=6, deadline=None)
@given(d=st.sampled_from([24, 32, 48]), f=st.integers(17, 40), heads=st.sampled_from([2, 4]), rows=st.integers(1, 2),
       pack=st.booleans(), bias=st.booleans(), seed=st.integers(0, 999))
def test_one_row_neighbours_fold_into_the_gemv_and_match_eager(d, f, heads, rows, pack, bias, seed):
    torch.manual_seed(seed)
    torch._dynamo.reset()
    m = Block(d, f, heads, bias).eval()
    if pack:
        assert pack_linears(m.mlp.gate_proj, m.mlp.up_proj)
    x, r = torch.randn(1, rows, d), torch.randn(1, rows, d)
    with torch.no_grad():
        want = m(x, r)
        compiled, manager = compiled_with_manager(m)
        got = compiled(x, r)
    for a, b in zip(got, want):
        assert relative_error(a, b) < 1e-5
    (_, counts), = manager.log
    one = rows == 1
    # the norm -> gate/up (once packed: unpacked, two linears read it); SwiGLU -> down; the residual adds after o and
    # down. Not the per-head norm.
    assert counts["gemv"] == (5 - pack if one else 0), counts
    assert (counts.get("gemv_norm", 0), counts.get("gemv_swiglu", 0), counts.get("gemv_residual", 0)) == \
        ((int(pack), 1, 2) if one else (0, 0, 0)), counts
