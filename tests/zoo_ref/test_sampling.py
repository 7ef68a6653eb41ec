"""Sampling filters vs brute-force definitions."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo_ref.sampling import apply_repetition_penalty, filter_top_k_top_p


@settings(max_examples=200)
@given(seed=st.integers(0, 2 ** 16), vocab=st.integers(2, 40), top_k=st.integers(0, 45),
       top_p=st.floats(0.05, 1.0))
def test_top_k_top_p_keep_exactly_the_defined_set(seed, vocab, top_k, top_p):
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    kept = torch.isfinite(filter_top_k_top_p(logits, top_k, top_p))[0]
    order = logits[0].argsort(descending=True).tolist()
    allowed = set(order[:top_k] if top_k else order)
    probs = torch.softmax(logits[0, [i for i in order if i in allowed]], 0)
    expected, mass = set(), 0.0
    for i, p in zip([i for i in order if i in allowed], probs.tolist()):
        if mass >= top_p and expected:
            break
        expected.add(i)
        mass += p
    assert set(torch.nonzero(kept).flatten().tolist()) == expected


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]
