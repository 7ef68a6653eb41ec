"""In-place RoPE for q and k in one launch: one program per token, all heads of q and k."""
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(base, head_stride, n, c1, c2, s1, s2, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    # out[:half] = x1 cos1 - x2 sin1 ; out[half:] = x2 cos2 + x1 sin2   (x * cos + rotate_half(x) * sin)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    m = (h[:, None] < n) & (d[None, :] < HALF)
    p = base + h[:, None] * head_stride + d[None, :]
    x1 = tl.load(p, mask=m, other=0.0)
    x2 = tl.load(p + HALF, mask=m, other=0.0)
    a = x1.to(tl.float32)
    b = x2.to(tl.float32)
    tl.store(p, (a * c1[None, :] - b * s1[None, :]).to(x1.dtype), mask=m)
    tl.store(p + HALF, (b * c2[None, :] + a * s2[None, :]).to(x1.dtype), mask=m)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, q_tok, q_head, k_tok, k_head, c_tok, n_q, n_k,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    tok = tl.program_id(0)
    d = tl.arange(0, BLOCK_D)
    dm = d < HALF
    c_row = cos_ptr + tok * c_tok
    s_row = sin_ptr + tok * c_tok
    c1 = tl.load(c_row + d, mask=dm, other=0.0).to(tl.float32)
    c2 = tl.load(c_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    s1 = tl.load(s_row + d, mask=dm, other=0.0).to(tl.float32)
    s2 = tl.load(s_row + HALF + d, mask=dm, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr + tok * q_tok, q_head, n_q, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_D)
    if n_k > 0:
        _rotate_heads(k_ptr + tok * k_tok, k_head, n_k, c1, c2, s1, s2, HALF, BLOCK_H, BLOCK_D)


def _tokens_view(x):
    """[..., H, D] -> [N, H, D] as a view (None if the leading dims don't flatten to one stride)."""
    try:
        return x.view(-1, *x.shape[-2:]) if x.dim() != 3 else x
    except RuntimeError:
        return None


def rope_triton(q, k, cos, sin):
    """Rotate q (and k, unless None) in place."""
    d = q.shape[-1]
    q3 = _tokens_view(q)
    k3 = q3[:, :0] if k is None else _tokens_view(k)
    n_tok = q3.shape[0] if q3 is not None else 0
    ok = (q3 is not None and k3 is not None and k3.shape[0] == n_tok and q.stride(-1) == 1 and k.stride(-1) == 1
          and d % 2 == 0 and cos.numel() == n_tok * d)
    if not ok:  # unusual layout: same math, unfused
        from zoo_ref.layers import rotate
        for x in (q, k):
            if x is not None:
                x.copy_(rotate(x, cos, sin))
        return
    cos2, sin2 = cos.reshape(n_tok, d).contiguous(), sin.reshape(n_tok, d).contiguous()
    half = d // 2
    _rope_kernel[(n_tok,)](q3, k3, cos2, sin2, q3.stride(0), q3.stride(1), k3.stride(0), k3.stride(1), d,
                           q3.shape[1], k3.shape[1], HALF=half,
                           BLOCK_H=triton.next_power_of_2(max(q3.shape[1], k3.shape[1])),
                           BLOCK_D=triton.next_power_of_2(half))
