"""Triton kernels vs their torch twins (the CPU bodies of the zoo ops), under TRITON_INTERPRET=1 at small
sizes; on a GPU machine the same tests run the compiled kernels on CUDA."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

triton = pytest.importorskip("triton")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"  # interpreter set in conftest.py

import compile_passes.ops  # noqa: E402,F401  (zoo::gemv_fused: its CPU body is the reference)
from compile_passes.kernels.cache_write import cache_write_triton  # noqa: E402
from compile_passes.kernels.few_rows import few_rows_mm_triton  # noqa: E402
from compile_passes.kernels.gemv import gemv_triton  # noqa: E402
from compile_passes.kernels.gqa_decode import gqa_window_decode_triton  # noqa: E402
from compile_passes.kernels.mla_latent import mla_latent_triton  # noqa: E402
from compile_passes.kernels.mla_latent_gluon import gluon_fits, mla_latent_gluon  # noqa: E402
from compile_passes.kernels.rope import rope_cache_triton, rope_pair_triton, rope_triton  # noqa: E402
from compile_passes.kernels.segment_gluon import segment_attention_gluon, segment_gluon_fits  # noqa: E402
from zoo_ref.decoder import sliding_mask, window_mask  # noqa: E402
from zoo_ref.deepseek.mla import attention_mask, latent_attention, token_slots  # noqa: E402
from zoo_ref.layers import attention, rms_norm, rotate  # noqa: E402


def _rand(*shape, g):
    return torch.randn(*shape, generator=g).to(DEVICE)


@settings(max_examples=15)
@given(b=st.integers(1, 3), t=st.integers(1, 4), hq=st.sampled_from([1, 2, 4, 6]), hk=st.sampled_from([1, 2]),
       d=st.sampled_from([4, 8, 16, 64]), strided=st.booleans(), out_of_place=st.booleans(), norm=st.booleans(),
       seed=st.integers(0, 999))
def test_rope_matches_zoo_ref_rotate(b, t, hq, hk, d, strided, out_of_place, norm, seed):
    """In place or into new tensors; norm: each head RMSNorm'ed first (zoo::norm_rope_pair, out of place)."""
    g = torch.Generator().manual_seed(seed)
    if strided:  # q and k as views into one fused projection, like the vision qkv
        qkv = _rand(b, t, hq + hk + 1, d, g=g)
        q, k = qkv[:, :, :hq], qkv[:, :, hq:hq + hk]
    else:
        q, k = _rand(b, t, hq, d, g=g), _rand(b, t, hk, d, g=g)
    cos, sin = _rand(b, t, 1, d, g=g), _rand(b, t, 1, d, g=g)
    if norm:
        qw, kw = _rand(d, g=g), _rand(d, g=g)
        want_q, want_k = (torch.ops.zoo.norm_rotary(x.cpu(), w.cpu(), 1e-6, cos.cpu(), sin.cpu())
                          for x, w in ((q, qw), (k, kw)))
        q, k = rope_pair_triton(q, k, cos, sin, qw, kw, 1e-6)
        torch.testing.assert_close(q.cpu(), want_q, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(k.cpu(), want_k, rtol=1e-5, atol=1e-5)
        return
    want_q, want_k = rotate(q, cos, sin), rotate(k, cos, sin)
    if out_of_place:  # zoo::rope_pair: new contiguous tensors, q and k untouched
        before = q.clone(), k.clone()
        q_out, k_out = rope_pair_triton(q, k, cos, sin)
        assert q_out.is_contiguous() and k_out.is_contiguous()
        assert torch.equal(q, before[0]) and torch.equal(k, before[1])
        q, k = q_out, k_out
    else:
        rope_triton(q, k, cos, sin)
    torch.testing.assert_close(q, want_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k, want_k, rtol=1e-5, atol=1e-5)


@settings(max_examples=15)
@given(b=st.integers(1, 2), t=st.integers(1, 3), hq=st.sampled_from([2, 4, 6]), hk=st.sampled_from([1, 2]),
       d=st.sampled_from([4, 16, 64]), norm=st.booleans(), data=st.data(), seed=st.integers(0, 999))
def test_rope_cache_writes_equal_norm_rope_and_cache_update(b, t, hq, hk, d, norm, data, seed):
    """zoo::norm_rope_cache_'s kernel: q, k, v as views of one projection; the rotated q returned, the rotated k and
    v written into the caches at the given slots (and nowhere else: the other slots keep their NaN)."""
    g = torch.Generator().manual_seed(seed)
    s = t + 3
    qkv = _rand(b, t, hq + 2 * hk, d, g=g)
    q, k, v = qkv[:, :, :hq], qkv[:, :, hq:hq + hk], qkv[:, :, hq + hk:]
    cos, sin = _rand(b, t, 1, d, g=g), _rand(b, t, 1, d, g=g)
    qw, kw = (_rand(d, g=g), _rand(d, g=g)) if norm else (None, None)
    slot = torch.tensor(sorted(data.draw(st.permutations(range(s)))[:t]), device=DEVICE)
    k_cache, v_cache = (torch.full((b, hk, s, d), float("nan"), device=DEVICE) for _ in range(2))
    cpu = [x if x is None else x.cpu() for x in (q, k, v, qw, kw, cos, sin, k_cache, v_cache, slot)]
    want_kc, want_vc = cpu[7].clone(), cpu[8].clone()
    if norm:
        want_q = torch.ops.zoo.norm_rope_cache_(*cpu[:5], 1e-6, *cpu[5:7], want_kc, want_vc, cpu[9])
    else:
        want_q, rk = rotate(cpu[0], cpu[5], cpu[6]), rotate(cpu[1], cpu[5], cpu[6])
        want_kc.index_copy_(2, cpu[9], rk.transpose(1, 2))
        want_vc.index_copy_(2, cpu[9], cpu[2].transpose(1, 2))
    got_q = rope_cache_triton(q, k, v, qw, kw, 1e-6, cos, sin, k_cache, v_cache, slot)
    torch.testing.assert_close(got_q.cpu(), want_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_cache.cpu(), want_kc, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(v_cache.cpu(), want_vc, rtol=1e-5, atol=1e-5, equal_nan=True)


@settings(max_examples=15)
@given(n=st.integers(1, 300), k=st.integers(1, 2100), bias=st.booleans(), strided=st.booleans(),
       blocks=st.sampled_from([None, (1, 16, 1), (4, 64, 2)]), seed=st.integers(0, 999))
def test_gemv_matches_linear(n, k, bias, strided, blocks, seed):
    """One-row linear: uneven N and K (masked tails), a bias, and a weight that is a row slice of a wider buffer
    (what the sibling-linears pass hands it)."""
    g = torch.Generator().manual_seed(seed)
    x = _rand(1, k, g=g)
    w = _rand(n + 3, k, g=g)[2:n + 2] if strided else _rand(n, k, g=g)
    b = _rand(n, g=g) if bias else None
    torch.testing.assert_close(gemv_triton(x, w, b, blocks=blocks), torch.nn.functional.linear(x, w, b),
                               rtol=1e-5, atol=1e-4)


@settings(max_examples=15)
@given(m=st.integers(1, 16), n=st.integers(1, 100), k=st.integers(1, 700), bias=st.booleans(), strided=st.booleans(),
       blocks=st.sampled_from([(32, 256, 4, 4), (16, 64, 4, 2), (64, 128, 4, 3)]), seed=st.integers(0, 999))
def test_few_rows_mm_matches_linear(m, n, k, bias, strided, blocks, seed):
    """Up to 16 rows: uneven N and K (masked tails), a bias, x and w as row slices of wider buffers."""
    g = torch.Generator().manual_seed(seed)
    x = _rand(m, k + 5, g=g)[:, 3:k + 3] if strided else _rand(m, k, g=g)
    w = _rand(n + 3, k, g=g)[2:n + 2] if strided else _rand(n, k, g=g)
    b = _rand(n, g=g) if bias else None
    torch.testing.assert_close(few_rows_mm_triton(x, w, b, blocks=blocks), torch.nn.functional.linear(x, w, b),
                               rtol=1e-5, atol=1e-4)


def test_few_rows_mm_at_mla_o_proj_depth():
    """The reduction the kernel is used for (K = 16384: MLA's o_proj), 16 rows and 7, N not a multiple of the block."""
    g = torch.Generator().manual_seed(0)
    w = _rand(40, 16384, g=g)
    for m in (16, 7):
        x = _rand(m, 16384, g=g)
        torch.testing.assert_close(few_rows_mm_triton(x, w), x @ w.T, rtol=1e-5, atol=1e-3)


@settings(max_examples=20)
@given(n=st.integers(1, 300), k=st.integers(1, 2100), bias=st.booleans(), gate=st.booleans(), norm=st.booleans(),
       residual=st.booleans(), blocks=st.sampled_from([None, (1, 16, 1), (4, 64, 2)]), seed=st.integers(0, 999))
def test_gemv_fused_matches_its_torch_body(n, k, bias, gate, norm, residual, blocks, seed):
    """The GEMV with its prologues (silu(gate) * x, RMSNorm) and residual epilogue == zoo::gemv_fused's CPU body
    (zoo_ref's RMSNorm and SiLU), every combination, uneven sizes."""
    g = torch.Generator().manual_seed(seed)
    x, w = _rand(1, k, g=g), _rand(n, k, g=g)
    b = _rand(n, g=g) if bias else None
    a = _rand(1, k, g=g) if gate else None
    nw = _rand(k, g=g) if norm else None
    r = _rand(1, n, g=g) if residual else None
    eps = 1e-6
    cpu = [t if t is None else t.cpu() for t in (x, w, b, a, nw, r)]
    want = torch.ops.zoo.gemv_fused(*cpu[:5], eps, cpu[5])
    got = gemv_triton(x, w, b, blocks=blocks, gate=a, norm=nw, eps=eps, residual=r)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-4)


def _row_caches(kv, pe, rows):
    """Caches of more rows than the batch, batch row b's at cache row rows[b] (NaN past its length there, and in
    every row no batch row reads): what the packed prompt hands the kernels as kv_rows."""
    n_rows = int(rows.max()) + 2
    big_kv = torch.full((n_rows, *kv.shape[1:]), float("nan"), dtype=kv.dtype, device=kv.device)
    big_pe = torch.full((n_rows, *pe.shape[1:]), float("nan"), dtype=pe.dtype, device=pe.device)
    for i, row in enumerate(rows.tolist()):
        big_kv[row], big_pe[row] = kv[i], pe[i]
    return big_kv, big_pe


@settings(max_examples=20)
@given(b=st.integers(1, 3), t=st.integers(1, 3), h=st.sampled_from([1, 4, 20, 80]), c=st.sampled_from([16, 32]),
       r=st.sampled_from([8, 16]), s=st.integers(3, 70), splits=st.sampled_from([None, 1, 3]),
       block_h=st.sampled_from([16, 64]), by_row=st.booleans(), data=st.data(), seed=st.integers(0, 999))
def test_mla_latent_matches_reference_forward(b, t, h, c, r, s, splits, block_h, by_row, data, seed):
    """The kernel == zoo_ref's forward (latent_attention over the slots up to the longest row, its mask), with NaN
    in every slot beyond each row's length: those are never read. by_row: the batch's rows live at other rows of
    a bigger cache (kv_rows), as the packed prompt's tokens."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, t), min_size=b, max_size=b), label="seq_lens"))
    starts = torch.tensor([data.draw(st.integers(0, s - int(n)), label="start") for n in lens])
    q_lat, q_pe = _rand(b, t, h, c, g=g), _rand(b, t, h, r, g=g)
    kv, pe = _rand(b, s, c, g=g), _rand(b, s, r, g=g)
    n = max(1, int((starts + lens).max()))
    positions, valid = token_slots(starts, lens, t)
    want = latent_attention(q_lat, q_pe, kv[:, :n], pe[:, :n], attention_mask(positions, valid, n).to(DEVICE), 0.3)
    stale = (torch.arange(s)[None, :] >= (starts + lens)[:, None]).to(DEVICE)  # [B, S]
    kv[stale], pe[stale] = float("nan"), float("nan")
    rows = None
    if by_row:
        rows = torch.tensor(data.draw(st.permutations(range(b + 2)), label="rows")[:b], device=DEVICE)
        kv, pe = _row_caches(kv, pe, rows)
    out = mla_latent_triton(q_lat, q_pe, kv, pe, starts.to(DEVICE), lens.to(DEVICE), 0.3, block_h=block_h,
                            block_n=16, n_splits=splits, min_span=16, kv_rows=rows)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    assert torch.all(out[~valid.to(DEVICE)] == 0)  # padding queries see nothing: zeros


HOPPER = DEVICE == "cuda" and torch.cuda.get_device_capability()[0] == 9


@pytest.mark.skipif(not HOPPER, reason="the Gluon MLA kernel is Hopper wgmma code (no interpreter, no other GPU)")
@settings(max_examples=20, deadline=None)
@given(b=st.sampled_from([1, 3, 70]), t=st.sampled_from([1, 1, 5]), h=st.sampled_from([64, 128]),
       s=st.integers(1, 700), splits=st.sampled_from([None, 1, 3]), by_row=st.booleans(), data=st.data(),
       seed=st.integers(0, 999))
def test_mla_gluon_matches_reference_forward(b, t, h, s, splits, by_row, data, seed):
    """bf16 against the fp32 reference forward, decode and prefill, with and without split-KV: one-slot to
    several-tile rows, partial last tiles (odd tile counts: the pair's second tile empty), splits past a row's end,
    padding queries (zeros), NaN in every slot past each row's length (never read), batch rows at other cache rows
    (kv_rows); and the dispatch takes it for every such call on Hopper."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, min(t, s)), min_size=b, max_size=b), label="seq_lens"))
    starts = torch.tensor([data.draw(st.integers(0, s - int(n)), label="start") for n in lens])
    q_lat, q_pe = _rand(b, t, h, 512, g=g).bfloat16(), _rand(b, t, h, 64, g=g).bfloat16()
    kv, pe = _rand(b, s, 512, g=g).bfloat16(), _rand(b, s, 64, g=g).bfloat16()
    n = max(1, int((starts + lens).max()))
    positions, valid = token_slots(starts, lens, t)
    want = latent_attention(q_lat.float(), q_pe.float(), kv[:, :n].float(), pe[:, :n].float(),
                            attention_mask(positions, valid, n).to(DEVICE), 0.1)
    stale = (torch.arange(s)[None, :] >= (starts + lens)[:, None]).to(DEVICE)
    kv[stale], pe[stale] = float("nan"), float("nan")
    rows = None
    if by_row:
        rows = torch.tensor(data.draw(st.permutations(range(b + 2)), label="rows")[:b], device=DEVICE)
        kv, pe = _row_caches(kv, pe, rows)
    out = mla_latent_gluon(q_lat, q_pe, kv, pe, starts.to(DEVICE), lens.to(DEVICE), 0.1, n_splits=splits,
                           kv_rows=rows)
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2)
    assert torch.all(out[~valid.to(DEVICE)] == 0)
    assert gluon_fits(q_lat, q_pe, kv, pe)
    assert not gluon_fits(q_lat.float(), q_pe.float(), kv.float(), pe.float())  # fp32: the Triton kernel
    assert not gluon_fits(q_lat[:, :, :48], q_pe[:, :, :48], kv, pe)  # 48 heads: the Triton kernel
    kv_off = torch.zeros(b, s, 520, dtype=kv.dtype, device=kv.device)[..., 4:516]  # rows 8 bytes off alignment
    assert not gluon_fits(q_lat, q_pe, kv_off, pe)  # the Triton kernel serves it


@settings(max_examples=20)
@given(b=st.integers(1, 3), t=st.integers(1, 12), hkv=st.sampled_from([1, 2]), n_rep=st.sampled_from([1, 2, 3]),
       d=st.sampled_from([8, 16, 64]), s=st.integers(4, 90), splits=st.sampled_from([None, 1, 2, 5]),
       min_span=st.sampled_from([16, 32]), window=st.sampled_from([0, 1, 3, 20]), data=st.data(),
       seed=st.integers(0, 999))
def test_gqa_window_decode_matches_zoo_ref_attention(b, t, hkv, n_rep, d, s, splits, min_span, window, data, seed):
    """Each row's window [start, end) and the queries' slots drawn at random (queries outside their row's window
    too), a sliding-window layer's limit or none; every slot no query sees holds NaN, which must never reach the
    output."""
    g = torch.Generator().manual_seed(seed)
    q = _rand(b, t, hkv * n_rep, d, g=g).transpose(1, 2)  # [B, H, T, D] as a transposed view, like the model
    k, v = _rand(b, hkv, s, d, g=g), _rand(b, hkv, s, d, g=g)
    start = torch.tensor(data.draw(st.lists(st.integers(0, s - 1), min_size=b, max_size=b)), device=DEVICE)
    end = torch.tensor([data.draw(st.integers(int(x) + 1, s)) for x in start], device=DEVICE)
    slots = torch.tensor(sorted(data.draw(st.lists(st.integers(0, s - 1), min_size=t, max_size=t))), device=DEVICE)
    mask = window_mask(start, end, slots, s)
    if window:
        mask = sliding_mask(mask, slots, window)
    seen = mask.any(-2)[:, :, :, None]  # [B, 1, S, 1]
    k, v = k.masked_fill(~seen, float("nan")), v.masked_fill(~seen, float("nan"))
    want = attention(q, k.nan_to_num(), v.nan_to_num(), mask, 0.25)
    out = gqa_window_decode_triton(q, k, v, start, end, slots, 0.25, block_n=16, n_splits=splits,
                                   min_span=min_span, window=window)
    assert out.transpose(1, 2).is_contiguous()  # [B, T, H, D] memory: the output projection reads it as is
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    assert torch.all(out.masked_fill(mask.any(-1, keepdim=True), 0) == 0)  # queries outside: zeros


def test_gluon_dispatch_rule(monkeypatch):
    """Which calls the Gluon MLA kernel takes (host logic, checked on any machine with the device parts stubbed):
    bf16 at 512 + 64 wide, heads a multiple of 64, rows on 16-byte boundaries, Hopper, not turned off."""
    import compile_passes.kernels.gluon_switch as switch
    import compile_passes.kernels.mla_latent_gluon as mg
    if mg.gluon is None:
        pytest.skip("this Triton has no Gluon")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    capability = [(9, 0)]
    monkeypatch.setattr(switch, "capability", lambda t: capability[0])
    bf16 = torch.bfloat16
    q_lat, q_pe = torch.zeros(2, 3, 128, 512, dtype=bf16), torch.zeros(2, 3, 128, 192, dtype=bf16)[..., 128:]
    kv, pe = torch.zeros(2, 70, 512, dtype=bf16), torch.zeros(2, 70, 64, dtype=bf16)
    assert gluon_fits(q_lat, q_pe, kv, pe)  # q_pe a view into the wider q, as the model makes it
    assert gluon_fits(q_lat[:, :1], q_pe[:, :1], kv, pe)  # decode
    assert not gluon_fits(q_lat[:, :, :48], q_pe[:, :, :48], kv, pe)  # heads not a multiple of 64
    assert not gluon_fits(q_lat.float(), q_pe.float(), kv.float(), pe.float())  # fp32
    assert not gluon_fits(q_lat, q_pe, torch.zeros(2, 70, 520, dtype=bf16)[..., 4:516], pe)  # rows 8 bytes off
    assert not gluon_fits(q_lat[..., :256], q_pe, kv[..., :256], pe)  # another latent width
    monkeypatch.setenv("ZOO_MLA_GLUON", "0")
    assert not gluon_fits(q_lat, q_pe, kv, pe)  # turned off
    monkeypatch.setenv("ZOO_MLA_GLUON", "1")
    capability[0] = (8, 0)
    assert not gluon_fits(q_lat, q_pe, kv, pe)  # no wgmma before Hopper


def _segment_inputs(segments, length, h, packed_v, g):
    """q, k [1, H, N, 64] as views of the RoPE kernel's [N, H, 64] outputs; v a view into the qkv projection's
    [N, 3, H, 64] output (packed_v) or of its own [N, H, 64]: the layouts the vision blocks hand over."""
    n = segments * length
    qkv = _rand(n, 3, h, 64, g=g).bfloat16()
    q, k = _rand(n, h, 64, g=g).bfloat16(), _rand(n, h, 64, g=g).bfloat16()
    v = qkv[:, 2] if packed_v else _rand(n, h, 64, g=g).bfloat16()
    return tuple(x.transpose(0, 1)[None] for x in (q, k, v))


@pytest.mark.skipif(not HOPPER, reason="the Gluon segment kernel is Hopper wgmma / TMA code (no interpreter)")
@settings(max_examples=20, deadline=None)
@given(segments=st.sampled_from([1, 2, 3, 8]), length=st.integers(1, 1300), h=st.sampled_from([1, 3, 16]),
       packed_v=st.booleans(), seed=st.integers(0, 999))
def test_segment_gluon_matches_reference(segments, length, h, packed_v, seed):
    """bf16 against the fp32 twin (SDPA per segment): partial last key tiles, query blocks past a segment's end
    (idle warpgroups), one-patch segments, v strided inside the qkv output. The last segment's keys and values
    are NaN: a tile that crosses a segment's end must not read the next one, so every other segment stays equal."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = _segment_inputs(segments, length, h, packed_v, g)
    if segments > 1:
        k[:, :, -length:], v[:, :, -length:] = float("nan"), float("nan")

    def batch(x):  # [1, H, N, 64] -> [segments, H, L, 64]
        return x[0].unflatten(1, (segments, length)).transpose(0, 1).float()
    want = torch.nn.functional.scaled_dot_product_attention(batch(q), batch(k), batch(v), scale=0.125)
    out = segment_attention_gluon(q, k, v, segments, 0.125)
    assert out.shape == q.shape and out.transpose(1, 2).is_contiguous()  # [1, N, H, 64] memory
    keep = segments - (segments > 1)
    torch.testing.assert_close(batch(out)[:keep], want[:keep], rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not HOPPER, reason="the Gluon segment kernel is Hopper wgmma / TMA code (no interpreter)")
def test_segment_attention_op_takes_the_gluon_kernel_where_it_fits(monkeypatch):
    """zoo::segment_attention on CUDA: equal segments go to the Gluon kernel when it fits, and give what the kernel
    gives; ZOO_SEGMENT_GLUON=0 falls back to SDPA, within bf16 rounding of it."""
    from compile_passes import segments as seg_ops  # noqa: F401  (registers zoo::segment_attention)
    q, k, v = _segment_inputs(3, 500, 16, True, torch.Generator().manual_seed(0))
    cu = torch.tensor([0, 500, 1000, 1500], device=DEVICE)
    monkeypatch.delenv("ZOO_SEGMENT_GLUON", raising=False)
    assert segment_gluon_fits(q, k, v, 3)
    out = torch.ops.zoo.segment_attention(q, k, v, cu, 500, 0.125)
    assert torch.equal(out, segment_attention_gluon(q, k, v, 3, 0.125))
    monkeypatch.setenv("ZOO_SEGMENT_GLUON", "0")
    assert not segment_gluon_fits(q, k, v, 3)
    torch.testing.assert_close(torch.ops.zoo.segment_attention(q, k, v, cu, 500, 0.125), out, rtol=2e-2, atol=2e-2)


def test_segment_gluon_dispatch_rule(monkeypatch):
    """Which calls the Gluon segment kernel takes (host logic, checked on any machine with the device parts
    stubbed): bf16 at head dim 64, as many key as query heads, each token's heads side by side in a 16-byte
    aligned row, Hopper, unless ZOO_SEGMENT_GLUON=0."""
    import compile_passes.kernels.gluon_switch as switch
    import compile_passes.kernels.segment_gluon as sg
    if sg.gluon is None:
        pytest.skip("this Triton has no Gluon")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("ZOO_SEGMENT_GLUON", raising=False)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    capability = [(9, 0)]
    monkeypatch.setattr(switch, "capability", lambda t: capability[0])
    q, k, v = tuple(x.to("cpu") for x in _segment_inputs(1, 784, 16, True, torch.Generator().manual_seed(0)))
    assert segment_gluon_fits(q, k, v, 1)
    assert not segment_gluon_fits(q.float(), k.float(), v.float(), 1)  # fp32
    assert not segment_gluon_fits(q, k[:, :8], v[:, :8], 1)  # GQA
    assert not segment_gluon_fits(q.contiguous(), k, v, 1)  # heads far apart ([1, H, N, 64] memory)
    wide = torch.zeros(784, 16, 72, dtype=torch.bfloat16)[..., 4:68].transpose(0, 1)[None]
    assert not segment_gluon_fits(q, k, wide, 1)  # rows 8 bytes off, heads not side by side
    assert not segment_gluon_fits(q[..., :32], k[..., :32], v[..., :32], 1)  # head dim 32
    monkeypatch.setenv("ZOO_SEGMENT_GLUON", "0")
    assert not segment_gluon_fits(q, k, v, 1)  # turned off
    monkeypatch.delenv("ZOO_SEGMENT_GLUON")
    capability[0] = (8, 0)
    assert not segment_gluon_fits(q, k, v, 1)  # no wgmma before Hopper


@settings(max_examples=12, deadline=None)
@given(q=st.integers(1, 3), h=st.integers(1, 3), n_splits=st.sampled_from([1, 5, 70, 130]),
       width=st.sampled_from([8, 200, 512]), data=st.data(), seed=st.integers(0, 999))
def test_merge_splits_matches_logsumexp_weights(q, h, n_splits, width, data, seed):
    """The split merge == the softmax(lse)-weighted sum over the active splits, with more splits than one pass
    folds (online rescaling across passes), several column blocks, splits that saw nothing (lse -inf) and NaN in
    every split past a query's active count (never read)."""
    from compile_passes.kernels.splitk import merge_splits_into
    g = torch.Generator().manual_seed(seed)
    bd = triton.next_power_of_2(width)
    o, lse = _rand(q, h, n_splits, bd, g=g), 3 * _rand(q, h, n_splits, g=g)
    active = [n_splits] + data.draw(st.lists(st.integers(0, n_splits), min_size=q - 1, max_size=q - 1))
    active = torch.tensor(active, device=DEVICE)  # query 0 reads every split: all passes of the fold
    lse[torch.rand(lse.shape, generator=g).to(DEVICE) < 0.3] = float("-inf")
    past = torch.arange(n_splits, device=DEVICE)[None, None, :] >= active[:, None, None]  # [q, 1, splits]
    o, lse = o.masked_fill(past[..., None], float("nan")), lse.masked_fill(past, float("nan"))
    w = torch.softmax(lse.masked_fill(past, float("-inf")), -1).nan_to_num()  # no split at all: weight 0
    want = torch.einsum("qhs,qhsd->qhd", w, o.nan_to_num())[..., :width]
    out = merge_splits_into(torch.empty(q, 1, h, width, device=DEVICE), o, lse, 1, active.int())
    torch.testing.assert_close(out[:, 0], want, rtol=1e-5, atol=1e-5)


@settings(max_examples=10)
@given(b=st.integers(1, 3), t=st.integers(1, 5), by_row=st.booleans(), seed=st.integers(0, 999))
def test_cache_write_matches_torch_op(b, t, by_row, seed):
    """Batch row b's tokens t < lens[b] land at slots start[b] + t of cache row b (by_row: of cache row rows[b], as
    the packed prompt writes); nothing else changes. The op's CPU body and the kernel against a plain loop."""
    g = torch.Generator().manual_seed(seed)
    s, c, r = 12, 16, 8
    rows = torch.randperm(b + 2, generator=g)[:b].to(DEVICE) if by_row else None
    kv, pe = _rand(b + 2, s, c, g=g), _rand(b + 2, s, r, g=g)
    latent, k_pe = _rand(b, t, c, g=g), _rand(b, t, r, g=g)
    lens = torch.randint(0, t + 1, (b,), generator=g).to(DEVICE)
    start = torch.randint(0, s - t + 1, (b,), generator=g).to(DEVICE)
    want_kv, want_pe = kv.clone(), pe.clone()
    rows_valid = torch.arange(t, device=DEVICE)[None] < lens[:, None]
    for i in range(b):
        row = int(rows[i]) if by_row else i
        for j in range(t):
            if rows_valid[i, j]:
                want_kv[row, start[i] + j] = latent[i, j]
                want_pe[row, start[i] + j] = k_pe[i, j]
    op_kv, op_pe = kv.cpu(), pe.cpu()
    torch.ops.zoo.mla_cache_write_(op_kv, op_pe, latent.cpu(), k_pe.cpu(), start.cpu(), lens.cpu(),
                                   None if rows is None else rows.cpu())
    assert torch.equal(op_kv, want_kv.cpu()) and torch.equal(op_pe, want_pe.cpu())
    cache_write_triton(kv, pe, latent, k_pe, start, lens, rows)
    assert torch.equal(kv, want_kv) and torch.equal(pe, want_pe)


def _broadcast(value, b):
    """A [b] view of one value (stride 0) over a buffer whose next element is 0: a kernel that indexes it as a
    contiguous per-row vector reads that 0 (or past the buffer) for every row after the first."""
    return torch.tensor([value, 0], device=DEVICE)[:1].expand(b)


def test_kernels_take_per_row_vectors_as_broadcast_views():
    """The decode passes its rows' key_end as one slot expanded over the batch (zoo.runtime's window_mask call):
    each kernel must read such a view as the values it shows, not as contiguous memory."""
    g = torch.Generator().manual_seed(0)
    b, s, t = 3, 20, 1
    q = _rand(b, t, 4, 16, g=g).transpose(1, 2)
    k, v = _rand(b, 2, s, 16, g=g), _rand(b, 2, s, 16, g=g)
    start, slots = torch.zeros(b, dtype=torch.long, device=DEVICE), torch.tensor([9], device=DEVICE)
    want = gqa_window_decode_triton(q, k, v, start, torch.full((b,), 10, device=DEVICE), slots, 0.25, block_n=16)
    got = gqa_window_decode_triton(q, k, v, start, _broadcast(10, b), slots, 0.25, block_n=16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    q_lat, q_pe, kv, pe = _rand(b, t, 4, 16, g=g), _rand(b, t, 4, 8, g=g), _rand(b, s, 16, g=g), _rand(b, s, 8, g=g)
    starts, lens = torch.full((b,), 9, device=DEVICE), torch.ones(b, dtype=torch.long, device=DEVICE)
    want = mla_latent_triton(q_lat, q_pe, kv, pe, starts, lens, 0.3, block_n=16, min_span=16)
    got = mla_latent_triton(q_lat, q_pe, kv, pe, _broadcast(9, b), _broadcast(1, b), 0.3, block_n=16, min_span=16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    kv2, pe2 = kv.clone(), pe.clone()
    cache_write_triton(kv, pe, q_lat[:, :, 0], q_pe[:, :, 0], starts, lens)
    cache_write_triton(kv2, pe2, q_lat[:, :, 0], q_pe[:, :, 0], _broadcast(9, b), _broadcast(1, b))
    assert torch.equal(kv2, kv) and torch.equal(pe2, pe)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_gelu_epilogue_is_the_tanh_gelu(dtype):
    """zoo::linear_gelu_tanh (cuBLASLt's GELU epilogue on CUDA) == gelu(linear, tanh): the erf GELU differs by up to
    ~5e-4, far above the fp32 tolerance (CPU's _addmm_activation computes the erf form: the op does not use it)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = _rand(37, 64, g=g), _rand(96, 64, g=g) / 8, _rand(96, g=g)
    x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
    want = torch.nn.functional.gelu(torch.nn.functional.linear(x.float(), w.float(), b.float()), approximate="tanh")
    got = torch.ops.zoo.linear_gelu_tanh(x, w, b)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


@pytest.mark.skipif(DEVICE != "cuda", reason="off CUDA the op's body is the reference itself")
@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 5), h=st.sampled_from([1, 4, 128]),
       dtype=st.sampled_from(["fp32", "bf16"]), permuted=st.booleans(), seed=st.integers(0, 999))
def test_mla_absorb_values_writes_o_projs_layout(b, t, h, dtype, permuted, seed):
    """zoo::mla_absorb_values on CUDA (a strided-batched GEMM straight into [B, T, H * V]) == zoo_ref's
    absorb_values then the reshape, with w_uv a slice of kv_b's weight as the model passes it and o_lat contiguous
    (the attention op's output) or a permuted view (eager latent_attention's)."""
    from zoo_ref.deepseek.mla import absorb_values
    g = torch.Generator().manual_seed(seed)
    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    o_lat = _rand(b, t, h, 32, g=g).to(dt)
    if permuted:
        o_lat = _rand(h, b, t, 32, g=g).to(dt).permute(1, 2, 0, 3)
    w_uv = (_rand(h, 16 + 24, 32, g=g) / 4).to(dt)[:, 16:]  # [H, V, C]: kv_b's value rows
    want = absorb_values(o_lat.float(), w_uv.float()).reshape(b, t, -1)
    got = torch.ops.zoo.mla_absorb_values(o_lat, w_uv)
    assert got.shape == want.shape and got.is_contiguous()
    tol = 1e-4 if dtype == "fp32" else 2e-2
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("norm", [False, True])
def test_rope_kernels_fall_back_to_torch_for_layouts_they_do_not_take(norm):
    """q and k whose head dim is not unit-stride: the wrappers compute the same thing in torch (no launch)."""
    g = torch.Generator().manual_seed(3)
    q = _rand(1, 3, 16, 4, g=g).transpose(-1, -2)  # [B, T, H, D], stride(-1) == 4
    k = _rand(1, 3, 16, 2, g=g).transpose(-1, -2)
    v = _rand(1, 3, 2, 16, g=g)
    cos, sin = _rand(1, 3, 1, 16, g=g), _rand(1, 3, 1, 16, g=g)
    qw, kw = (_rand(16, g=g), _rand(16, g=g)) if norm else (None, None)
    want_q, want_k = (rotate(x if w is None else rms_norm(x, w, 1e-6), cos, sin) for x, w in ((q, qw), (k, kw)))
    q_out, k_out = torch.empty_like(want_q), torch.empty_like(want_k)
    rope_triton(q, k, cos, sin, q_out, k_out, qw, kw, 1e-6)
    torch.testing.assert_close((q_out, k_out), (want_q, want_k))
    k_cache, v_cache = (torch.full((1, 2, 8, 16), float("nan"), device=DEVICE) for _ in range(2))
    slot = torch.tensor([2, 3, 4], device=DEVICE)
    torch.testing.assert_close(rope_cache_triton(q, k, v, qw, kw, 1e-6, cos, sin, k_cache, v_cache, slot), want_q)
    torch.testing.assert_close(k_cache[:, :, 2:5], want_k.transpose(1, 2))
    assert torch.equal(v_cache[:, :, 2:5], v.transpose(1, 2)) and k_cache[:, :, [0, 1, 5, 6, 7]].isnan().all()


def test_pdl_is_off_where_it_cannot_apply(monkeypatch):
    """Programmatic dependent launch only on a CUDA device of compute capability >= 9, not under the Triton
    interpreter, not with ZOO_PDL=0."""
    from compile_passes.kernels.pdl import pdl_launch
    assert pdl_launch(torch.zeros(1)) == {"USE_PDL": False}
    if DEVICE == "cuda":
        monkeypatch.setenv("ZOO_PDL", "0")
        assert pdl_launch(torch.zeros(1, device="cuda")) == {"USE_PDL": False}


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs and programmatic dependent launch need a GPU")
def test_pdl_chain_in_a_cuda_graph_equals_classic_launches(monkeypatch):
    """A chain of kernels each reading the one before it (a wide GEMV, then narrow ones with the norm and residual
    folded in, the window kernel and its merge), captured in a CUDA graph: with PDL each waits for its predecessor,
    so the replay equals the classic launches bit for bit (a kernel reading its input early would not)."""
    from compile_passes.kernels.pdl import pdl_launch
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, 1024, device="cuda", generator=g, dtype=torch.bfloat16)
    wide = torch.randn(16384, 1024, device="cuda", generator=g, dtype=torch.bfloat16) / 32
    ws = [torch.randn(1024, 16384 if i == 0 else 1024, device="cuda", generator=g, dtype=torch.bfloat16) / 64
          for i in range(6)]
    norm = torch.rand(1024, device="cuda", generator=g, dtype=torch.bfloat16) + 0.5
    k, v = (torch.randn(1, 2, 512, 64, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    start, end, slot = (torch.tensor([n], device="cuda") for n in (0, 500, 499))

    def chain():
        y = gemv_triton(gemv_triton(x, wide), ws[0])  # 16384 outputs, then all of them read by one row
        for w in ws[1:]:
            y = gemv_triton(y, w, norm=norm, eps=1e-6, residual=y)
        q = y.view(1, 16, 1, 64)
        return gqa_window_decode_triton(q, k, v, start, end, slot, 0.125).reshape(1, 1024) + 0  # a torch kernel last

    def replayed():
        chain()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = chain()
        results = []
        for _ in range(3):
            graph.replay()
            results.append(out.clone())
        return results

    assert pdl_launch(x)["USE_PDL"] == (torch.cuda.get_device_capability()[0] >= 9)
    with_pdl = replayed()
    monkeypatch.setenv("ZOO_PDL", "0")
    classic = replayed()
    want = chain()
    assert all(torch.equal(r, want) for r in with_pdl + classic)
