"""RoPE for q and k in one launch: one program per token, all heads of q and k. In place (q and k overwritten), or
into new contiguous tensors when q and k are views into a projection that other views still read (rotating those
in place would make Inductor copy them first).

With norm weights (Qwen3's q_norm / k_norm: an RMSNorm per head right before RoPE) the kernel normalizes each head
first, reading q and k from the projection's output once: the norms' two kernels and their writes of q and k go."""
import triton
import triton.language as tl

from .pdl import pdl_launch, wait_for_inputs


@triton.jit
def _rotate_heads(src, dst, src_head, dst_head, n, c1, c2, s1, s2, w_ptr, eps, HALF: tl.constexpr,
                  NORM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    # out[:half] = x1 cos1 - x2 sin1 ; out[half:] = x2 cos2 + x1 sin2   (x * cos + rotate_half(x) * sin)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    m = (h[:, None] < n) & (d[None, :] < HALF)
    p = src + h[:, None] * src_head + d[None, :]
    o = dst + h[:, None] * dst_head + d[None, :]
    x1 = tl.load(p, mask=m, other=0.0)
    x2 = tl.load(p + HALF, mask=m, other=0.0)
    a = x1.to(tl.float32)
    b = x2.to(tl.float32)
    if NORM:  # RMSNorm of each head (over its 2 * HALF dims), then its weight
        inv = tl.rsqrt((tl.sum(a * a, axis=1) + tl.sum(b * b, axis=1)) / (2 * HALF) + eps)
        w1 = tl.load(w_ptr + d, mask=d < HALF, other=0.0).to(tl.float32)
        w2 = tl.load(w_ptr + HALF + d, mask=d < HALF, other=0.0).to(tl.float32)
        a = a * inv[:, None] * w1[None, :]
        b = b * inv[:, None] * w2[None, :]
    tl.store(o, (a * c1[None, :] - b * s1[None, :]).to(dst.dtype.element_ty), mask=m)
    tl.store(o + HALF, (b * c2[None, :] + a * s2[None, :]).to(dst.dtype.element_ty), mask=m)


@triton.jit
def _cos_sin(c_row, s_row, HALF: tl.constexpr, BLOCK_D: tl.constexpr):
    """One token's cos / sin halves, in fp32."""
    d = tl.arange(0, BLOCK_D)
    dm = d < HALF
    c1 = tl.load(c_row + d, mask=dm, other=0.0).to(tl.float32)
    c2 = tl.load(c_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    s1 = tl.load(s_row + d, mask=dm, other=0.0).to(tl.float32)
    s2 = tl.load(s_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    return c1, c2, s1, s2


@triton.jit
def _rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr, qw_ptr, kw_ptr, eps, q_tok, q_head, k_tok, k_head,
                 qo_tok, qo_head, ko_tok, ko_head, c_tok, n_q, n_k, HALF: tl.constexpr, NORM: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_inputs(USE_PDL)
    tok = tl.program_id(0)
    c1, c2, s1, s2 = _cos_sin(cos_ptr + tok * c_tok, sin_ptr + tok * c_tok, HALF, BLOCK_D)
    _rotate_heads(q_ptr + tok * q_tok, qo_ptr + tok * qo_tok, q_head, qo_head, n_q, c1, c2, s1, s2, qw_ptr, eps, HALF,
                  NORM, BLOCK_H, BLOCK_D)
    if n_k > 0:
        _rotate_heads(k_ptr + tok * k_tok, ko_ptr + tok * ko_tok, k_head, ko_head, n_k, c1, c2, s1, s2, kw_ptr, eps,
                      HALF, NORM, BLOCK_H, BLOCK_D)


@triton.jit
def _rope_cache_kernel(q_ptr, k_ptr, v_ptr, qo_ptr, kc_ptr, vc_ptr, slot_ptr, cos_ptr, sin_ptr, qw_ptr, kw_ptr, eps, T,
                       q_tok, q_head, k_tok, k_head, v_tok, v_head, qo_tok, qo_head, c_b, c_h, c_s, c_tok, n_q, n_k,
                       HALF: tl.constexpr, NORM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                       USE_PDL: tl.constexpr):
    """The RoPE kernel whose rotated k (and the untouched v) go straight into the K/V caches [B, Hkv, S, D] at the
    token's slot, instead of into a k tensor that a second kernel would copy there."""
    wait_for_inputs(USE_PDL)
    tok = tl.program_id(0)
    row = tok // T
    slot = tl.load(slot_ptr + tok % T)
    d = tl.arange(0, BLOCK_D)
    dm = d < HALF
    c1, c2, s1, s2 = _cos_sin(cos_ptr + tok * c_tok, sin_ptr + tok * c_tok, HALF, BLOCK_D)
    _rotate_heads(q_ptr + tok * q_tok, qo_ptr + tok * qo_tok, q_head, qo_head, n_q, c1, c2, s1, s2, qw_ptr, eps, HALF,
                  NORM, BLOCK_H, BLOCK_D)
    at = row * c_b + slot * c_s
    _rotate_heads(k_ptr + tok * k_tok, kc_ptr + at, k_head, c_h, n_k, c1, c2, s1, s2, kw_ptr, eps, HALF, NORM, BLOCK_H,
                  BLOCK_D)
    h = tl.arange(0, BLOCK_H)
    m = (h[:, None] < n_k) & dm[None, :]
    src = v_ptr + tok * v_tok + h[:, None] * v_head + d[None, :]
    dst = vc_ptr + at + h[:, None] * c_h + d[None, :]
    tl.store(dst, tl.load(src, mask=m), mask=m)
    tl.store(dst + HALF, tl.load(src + HALF, mask=m), mask=m)


def rope_cache_triton(q, k, v, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, slot):
    """q, k, v [B, T, H, D] (k and v with Hkv heads; any strides with unit stride along D); q_weight / k_weight [D]
    or None (no per-head norm); caches [B, Hkv, S, D] contiguous; slot [T]. Returns the rotated q (new, contiguous);
    the rotated k and v are written into the caches at their slots."""
    b, t, hq, d = q.shape
    hk = k.shape[2]
    assert d % 2 == 0 and k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.stride() == v_cache.stride()
    q_out = q.new_empty(q.shape)
    views = [_tokens_view(x) for x in (q, k, v)]
    if any(x is None or x.stride(-1) != 1 for x in views) or cos.numel() != b * t * d:  # unusual layout: unfused
        q_out.copy_(_unfused(q, q_weight, eps, cos, sin))
        k_cache.index_copy_(2, slot, _unfused(k, k_weight, eps, cos, sin).transpose(1, 2))
        v_cache.index_copy_(2, slot, v.transpose(1, 2))
        return q_out
    q3, k3, v3 = views
    qo3 = q_out.view(-1, hq, d)
    cos2, sin2 = cos.reshape(b * t, d).contiguous(), sin.reshape(b * t, d).contiguous()
    norm = q_weight is not None
    qw = q_weight.contiguous() if norm else cos2
    kw = k_weight.contiguous() if norm else cos2
    _rope_cache_kernel[(b * t,)](
        q3, k3, v3, qo3, k_cache, v_cache, slot.contiguous(), cos2, sin2, qw, kw, float(eps), t, q3.stride(0),
        q3.stride(1), k3.stride(0), k3.stride(1), v3.stride(0), v3.stride(1), qo3.stride(0), qo3.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), d, hq, hk, HALF=d // 2, NORM=norm,
        BLOCK_H=triton.next_power_of_2(max(hq, hk)), BLOCK_D=triton.next_power_of_2(d // 2), **pdl_launch(q))
    return q_out


def _unfused(x, weight, eps, cos, sin):
    """What the kernels compute, in torch (layouts they do not take): x RMSNorm'ed per head when weight is given,
    then rotated."""
    from zoo_ref.layers import rms_norm, rotate
    return rotate(x if weight is None else rms_norm(x, weight, eps), cos, sin)


def _tokens_view(x):
    """[..., H, D] -> [N, H, D] as a view (None if the leading dims don't flatten to one stride)."""
    try:
        return x.view(-1, *x.shape[-2:]) if x.dim() != 3 else x
    except RuntimeError:
        return None


def rope_triton(q, k, cos, sin, q_out=None, k_out=None, q_weight=None, k_weight=None, eps=0.0):
    """Rotate q (and k, unless None) by cos/sin: in place, or into q_out / k_out (same shapes) when given.
    q_weight / k_weight [D]: RMSNorm each head with them (and eps) before rotating (both or neither)."""
    d = q.shape[-1]
    q_out = q if q_out is None else q_out
    k_out = k if k_out is None else k_out
    views = [_tokens_view(x) for x in (q, q_out)]
    views += [views[0][:, :0], views[1][:, :0]] if k is None else [_tokens_view(x) for x in (k, k_out)]
    n_tok = views[0].shape[0] if views[0] is not None else 0
    ok = (all(v is not None and v.shape[0] == n_tok and v.stride(-1) == 1 for v in views) and d % 2 == 0
          and cos.numel() == n_tok * d)
    norm = q_weight is not None
    if not ok:  # unusual layout: same math, unfused
        for x, out, w in ((q, q_out, q_weight), (k, k_out, k_weight)):
            if x is not None:
                out.copy_(_unfused(x, w, eps, cos, sin))
        return
    q3, qo3, k3, ko3 = views
    cos2, sin2 = cos.reshape(n_tok, d).contiguous(), sin.reshape(n_tok, d).contiguous()
    half = d // 2
    qw = q_weight.contiguous() if norm else cos2
    kw = k_weight.contiguous() if norm and k is not None else qw
    _rope_kernel[(n_tok,)](q3, k3, qo3, ko3, cos2, sin2, qw, kw, float(eps), q3.stride(0), q3.stride(1), k3.stride(0),
                           k3.stride(1), qo3.stride(0), qo3.stride(1), ko3.stride(0), ko3.stride(1), d, q3.shape[1],
                           k3.shape[1], HALF=half, NORM=norm,
                           BLOCK_H=triton.next_power_of_2(max(q3.shape[1], k3.shape[1])),
                           BLOCK_D=triton.next_power_of_2(half), **pdl_launch(q))


def rope_pair_triton(q, k, cos, sin, q_weight=None, k_weight=None, eps=0.0):
    """(rotated q, rotated k) as new contiguous tensors; q and k are only read. With weights: RMSNorm'ed first."""
    q_out, k_out = q.new_empty(q.shape), k.new_empty(k.shape)  # contiguous, as zoo::rope_pair's fake says
    rope_triton(q, k, cos, sin, q_out, k_out, q_weight, k_weight, eps)
    return q_out, k_out
