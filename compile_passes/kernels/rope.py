"""RoPE for q and k in one launch: one program per token, all heads of q and k. In place (q and k overwritten), or
into new contiguous tensors when q and k are views into a projection that other views still read (rotating those
in place would make Inductor copy them first)."""
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(src, dst, src_head, dst_head, n, c1, c2, s1, s2, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_D: tl.constexpr):
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
    tl.store(o, (a * c1[None, :] - b * s1[None, :]).to(x1.dtype), mask=m)
    tl.store(o + HALF, (b * c2[None, :] + a * s2[None, :]).to(x1.dtype), mask=m)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr, q_tok, q_head, k_tok, k_head, qo_tok, qo_head,
                 ko_tok, ko_head, c_tok, n_q, n_k, HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    tok = tl.program_id(0)
    d = tl.arange(0, BLOCK_D)
    dm = d < HALF
    c_row = cos_ptr + tok * c_tok
    s_row = sin_ptr + tok * c_tok
    c1 = tl.load(c_row + d, mask=dm, other=0.0).to(tl.float32)
    c2 = tl.load(c_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    s1 = tl.load(s_row + d, mask=dm, other=0.0).to(tl.float32)
    s2 = tl.load(s_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr + tok * q_tok, qo_ptr + tok * qo_tok, q_head, qo_head, n_q, c1, c2, s1, s2, HALF, BLOCK_H,
                  BLOCK_D)
    if n_k > 0:
        _rotate_heads(k_ptr + tok * k_tok, ko_ptr + tok * ko_tok, k_head, ko_head, n_k, c1, c2, s1, s2, HALF,
                      BLOCK_H, BLOCK_D)


def _tokens_view(x):
    """[..., H, D] -> [N, H, D] as a view (None if the leading dims don't flatten to one stride)."""
    try:
        return x.view(-1, *x.shape[-2:]) if x.dim() != 3 else x
    except RuntimeError:
        return None


def rope_triton(q, k, cos, sin, q_out=None, k_out=None):
    """Rotate q (and k, unless None) by cos/sin: in place, or into q_out / k_out (same shapes) when given."""
    d = q.shape[-1]
    q_out = q if q_out is None else q_out
    k_out = k if k_out is None else k_out
    views = [_tokens_view(x) for x in (q, q_out)]
    views += [views[0][:, :0], views[1][:, :0]] if k is None else [_tokens_view(x) for x in (k, k_out)]
    n_tok = views[0].shape[0] if views[0] is not None else 0
    ok = (all(v is not None and v.shape[0] == n_tok and v.stride(-1) == 1 for v in views) and d % 2 == 0
          and cos.numel() == n_tok * d)
    if not ok:  # unusual layout: same math, unfused
        from zoo_ref.layers import rotate
        for x, out in ((q, q_out), (k, k_out)):
            if x is not None:
                out.copy_(rotate(x, cos, sin))
        return
    q3, qo3, k3, ko3 = views
    cos2, sin2 = cos.reshape(n_tok, d).contiguous(), sin.reshape(n_tok, d).contiguous()
    half = d // 2
    _rope_kernel[(n_tok,)](q3, k3, qo3, ko3, cos2, sin2, q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1),
                           qo3.stride(0), qo3.stride(1), ko3.stride(0), ko3.stride(1), d, q3.shape[1], k3.shape[1],
                           HALF=half, BLOCK_H=triton.next_power_of_2(max(q3.shape[1], k3.shape[1])),
                           BLOCK_D=triton.next_power_of_2(half))


def rope_pair_triton(q, k, cos, sin):
    """(rotated q, rotated k) as new contiguous tensors; q and k are only read."""
    q_out, k_out = q.new_empty(q.shape), k.new_empty(k.shape)  # contiguous, as zoo::rope_pair's fake says
    rope_triton(q, k, cos, sin, q_out, k_out)
    return q_out, k_out
