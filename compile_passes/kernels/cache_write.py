"""MLA latent-cache write: one program per (row, token); padding tokens (t >= seq_len) write nothing. With a rows
tensor, batch row b writes cache row rows[b] (packed prompt tokens)."""
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs


@triton.jit
def _cache_write_kernel(kv_ptr, pe_ptr, lat_ptr, kpe_ptr, start_ptr, lens_ptr, rows_ptr, T, kv_b, kv_s, pe_b, pe_s,
                        lat_b, lat_t, kpe_b, kpe_t, C: tl.constexpr, R: tl.constexpr, BC: tl.constexpr,
                        BR: tl.constexpr, HAS_ROWS: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    pid = tl.program_id(0)
    b = pid // T
    t = pid % T
    n = tl.load(lens_ptr + b)
    if t < n:
        slot = tl.load(start_ptr + b) + t
        kb = b.to(tl.int64)
        if HAS_ROWS:
            kb = tl.load(rows_ptr + b).to(tl.int64)
        c = tl.arange(0, BC)
        tl.store(kv_ptr + kb * kv_b + slot * kv_s + c, tl.load(lat_ptr + b * lat_b + t * lat_t + c, mask=c < C),
                 mask=c < C)
        r = tl.arange(0, BR)
        tl.store(pe_ptr + kb * pe_b + slot * pe_s + r, tl.load(kpe_ptr + b * kpe_b + t * kpe_t + r, mask=r < R),
                 mask=r < R)


def cache_write_triton(kv_cache, pe_cache, latent, k_pe, start_pos, seq_lens, rows=None):
    b, t, c = latent.shape
    r = k_pe.shape[-1]
    start_pos, seq_lens = start_pos.contiguous(), seq_lens.contiguous()  # indexed by row: no broadcast views
    assert latent.stride(-1) == k_pe.stride(-1) == kv_cache.stride(-1) == pe_cache.stride(-1) == 1
    has_rows = rows is not None
    rows = rows.contiguous() if has_rows else start_pos  # (not read without HAS_ROWS)
    _cache_write_kernel[(b * t,)](kv_cache, pe_cache, latent, k_pe, start_pos, seq_lens, rows, t,
                                  kv_cache.stride(0), kv_cache.stride(1), pe_cache.stride(0), pe_cache.stride(1),
                                  latent.stride(0), latent.stride(1), k_pe.stride(0), k_pe.stride(1), C=c, R=r,
                                  BC=triton.next_power_of_2(c), BR=triton.next_power_of_2(r),
                                  HAS_ROWS=has_rows, **pdl_launch(latent))
