"""Sampling: filters vs brute-force definitions, per-row settings, the counter-based noise."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo_ref.sampling import (
    apply_repetition_penalty,
    filter_top_k_top_p,
    sample_next,
    sampling_params,
    seen_tokens,
    uniform_noise,
)


@settings(max_examples=200)
@given(seed=st.integers(0, 2 ** 16), vocab=st.integers(2, 40), top_k=st.integers(0, 45),
       top_p=st.floats(0.05, 1.0))
def test_top_k_top_p_keep_exactly_the_defined_set(seed, vocab, top_k, top_p):
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    kept = torch.isfinite(filter_top_k_top_p(logits, torch.tensor([top_k]), torch.tensor([top_p])))[0]
    order = logits[0].argsort(descending=True).tolist()
    allowed = set(order[:top_k] if top_k else order)
    probs = torch.softmax(logits[0, [i for i in order if i in allowed]], 0)
    expected, mass = set(), 0.0
    for i, p in zip([i for i in order if i in allowed], probs.tolist()):
        if top_p < 1 and mass >= top_p and expected:  # top_p 1 = off, exactly
            break
        expected.add(i)
        mass += p
    assert set(torch.nonzero(kept).flatten().tolist()) == expected


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]


def test_rows_keep_their_own_settings():
    """One batch, four settings: each row's filter is the one it would get alone."""
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(0)) * 3
    top_k, top_p = torch.tensor([0, 3, 0, 5]), torch.tensor([1.0, 1.0, 0.5, 0.7])
    batched = filter_top_k_top_p(logits, top_k, top_p)
    for i in range(4):
        alone = filter_top_k_top_p(logits[i:i + 1], top_k[i:i + 1], top_p[i:i + 1])
        assert torch.equal(batched[i:i + 1], alone)
    assert torch.isfinite(batched[0]).all()  # top_k 0 and top_p 1: nothing filtered


def test_greedy_rows_ignore_noise_and_sampled_rows_follow_their_seed():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    seen = torch.zeros(3, 50, dtype=torch.bool)
    params = sampling_params(3, do_sample=[False, True, True], temperature=[1.0, 1.0, 1.0], seed=[5, 7, 7])
    a = sample_next(logits, seen, params, torch.tensor(0))
    alone = sample_next(logits[1:2], seen[1:2], params.rows(slice(1, 2)), torch.tensor(0))
    assert a[0] == logits[0].argmax() and a[1] == alone[0]
    same_seed = sample_next(logits[2:], seen[2:], params.rows(slice(1, 2)), torch.tensor(0))
    assert a[2] == same_seed[0]  # row 2 has row 1's seed: the same draw
    banned = torch.tensor([int(logits[0].argmax())])
    assert sample_next(logits, seen, params, torch.tensor(0), banned)[0] != banned[0]


@settings(max_examples=30)
@given(seed=st.integers(0, 2 ** 16), batch=st.integers(1, 4), vocab=st.integers(2, 60), top_k=st.integers(0, 8),
       penalty=st.sampled_from([1.0, 1.3, 0.7]), ban=st.booleans())
def test_all_greedy_rows_skip_the_sampled_branch_with_the_same_tokens(seed, batch, vocab, top_k, penalty, ban):
    """any_sampled=False (what zoo's greedy decode step passes when no row samples) returns what the full selection
    returns for greedy rows, penalty and banned tokens included; the filters and the noise play no part."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g) * 3
    seen = torch.rand(batch, vocab, generator=g) < 0.3
    params = sampling_params(batch, do_sample=False, top_k=top_k, top_p=0.5, repetition_penalty=penalty, seed=seed)
    banned = torch.tensor([int(logits[0].argmax())]) if ban else None
    step = torch.tensor(seed % 7)
    want = sample_next(logits, seen, params, step, banned)
    assert torch.equal(sample_next(logits, seen, params, step, banned, any_sampled=False), want)


def test_noise_is_uniform_and_draws_follow_the_softmax():
    u = uniform_noise(torch.arange(64), torch.tensor(3), 4096)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01
    assert abs((u < 0.25).float().mean().item() - 0.25) < 0.01
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    params = sampling_params(1, do_sample=True, seed=123)
    draws = torch.stack([sample_next(logits, torch.zeros(1, 4, dtype=torch.bool), params, torch.tensor(s))
                         for s in range(4000)])
    freq = torch.bincount(draws.flatten(), minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03), freq


def test_seen_tokens_counts_every_valid_position():
    """Token 0 followed by a padding hole must stay seen (a scatter of the hole's False used to clear it)."""
    ids = torch.tensor([[0, 4, 0, 2]])
    valid = torch.tensor([[True, True, False, True]])
    assert seen_tokens(ids, valid, 6).tolist() == [[True, False, True, False, True, False]]


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=float("nan")), "temperature must be a finite number > 0"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty must be a finite number > 0"),
    (dict(top_p=0.0), "top_p must be in \\(0, 1\\]"),
    (dict(top_k=-1), "top_k must be an int >= 0"),
    (dict(top_k=[1, 2, 3]), "top_k has 3 per-row values but the batch has 2 rows"),
    (dict(seed=-1), "seed must be an int in \\[0, 2\\^32\\)"),
])
def test_bad_settings_name_the_argument(kw, message):
    with pytest.raises(ValueError, match=message):
        sampling_params(2, **kw)
