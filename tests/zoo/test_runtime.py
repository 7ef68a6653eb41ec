"""Pieces of the shared runtime on their own (zoo/runtime.py)."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.runtime import split_argmax


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 3), v=st.integers(1, 700), chunk=st.sampled_from([1, 7, 64, 1024]), levels=st.integers(1, 4),
       all_inf=st.booleans(), nan=st.booleans(), seed=st.integers(0, 999))
def test_split_argmax_is_torch_argmax(b, v, chunk, levels, all_inf, nan, seed):
    """The decode sampler's two-reduction argmax == torch's: many ties (few distinct values: the first maximum wins,
    also across chunks), a row of -inf, a NaN (torch takes it as the maximum)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (b, v), generator=g).float()
    if all_inf:
        x[0] = float("-inf")
    if nan:
        x[-1, int(torch.randint(0, v, (1,), generator=g))] = float("nan")
    assert torch.equal(split_argmax(x, chunk), x.argmax(-1))


def test_split_argmax_compiled():
    x = torch.randint(0, 3, (2, 3000)).float()
    x[1, 1234] = float("nan")
    assert torch.equal(torch.compile(split_argmax, fullgraph=True)(x), x.argmax(-1))
