"""The benchmark's peer adapter computes the same function as zoo_ref; the tiny run works end to end."""
import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import mla as bench
from bench.mla_peer import HFMLA
from zoo_ref.deepseek import MLA, MLAConfig
from zoo_ref.layers import relative_error
from zoo_ref.qwen3_vl.tiny import randomize_


@settings(max_examples=20)
@given(b=st.integers(1, 4), t=st.integers(1, 6), data=st.data(), seed=st.integers(0, 999))
def test_peer_batched_mask_matches_reference(b, t, data, seed):
    hists = data.draw(st.lists(st.integers(0, 12), min_size=b, max_size=b))
    lens = data.draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    ours = randomize_(MLA(MLAConfig.from_dict(bench.TINY)), seed).eval()
    peer = HFMLA(bench.TINY, ours.state_dict(), torch.float32, "cpu")
    cache = ours.new_cache(b, max(hists) + t)
    cache.kv.normal_()
    cache.pe.normal_()
    state = peer.new_cache(b, hists, 0)
    h = max(hists)
    if h:  # the same histories, left-padded for the peer (its pe layout equals ours: de-interleaved, rotated)
        layer = state[0].layers[0]
        for r, hr in enumerate(hists):
            layer.keys[r, 0, h - hr:] = cache.kv[r, :hr]
            layer.values[r, 0, h - hr:] = cache.pe[r, :hr]
    x = torch.rand(b, t, bench.TINY["hidden_size"])
    start, n = torch.tensor(hists), torch.tensor(lens)
    with torch.no_grad():
        ref = ours(x, cache, start, n)
        out = peer(x, state, start, n)
    valid = torch.arange(t)[None, :] < n[:, None]
    assert relative_error(out[valid], ref[valid]) < 1e-4


def test_tiny_bench_runs(tmp_path):
    bench.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "mla.json").read_text())["results"]
    assert set(res) == {"prefill task", "prefill batched", "decode task", "decode batched",
                        "decode task, lengths on GPU"}
    assert all(v > 0 for row in res.values() for v in row.values())
    assert (tmp_path / "mla.png").stat().st_size > 1000
