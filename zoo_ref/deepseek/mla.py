"""DeepSeek multi-head latent attention (MLA) over a static latent cache, naive and absorbed.

Cache (absorbed form, shared by both modes): kv [B, S, kv_lora_rank] = kv_a_layernorm(latent) and
pe [B, S, rope_dim] = the rotated rope key (one for all heads).
- naive:  expand the cached latents with kv_b_proj to per-head k_nope / v, attend with qk dim 192, v dim 128.
- absorb: fold W_UK into the query and W_UV into the output; attend over the 576-d latent (MQA, one kv head).
"""
import torch
from torch import nn

from ..errors import CheckpointError, InputError, InputTypeError
from ..layers import RMSNorm, apply_rotary, attention
from ..rope import Rotary
from .config import MLAConfig, softmax_scale


class MLACache(nn.Module):
    """Static latent cache, allocated once: kv [B, max_len, kv_lora_rank], pe [B, max_len, rope_dim]."""

    def __init__(self, batch, max_len, kv_lora_rank, rope_dim, dtype, device=None):
        super().__init__()
        self.register_buffer("kv", torch.zeros(batch, max_len, kv_lora_rank, dtype=dtype, device=device))
        self.register_buffer("pe", torch.zeros(batch, max_len, rope_dim, dtype=dtype, device=device))

    @property
    def max_len(self) -> int:
        return self.kv.shape[1]


def deinterleave(x):
    """DeepSeek's pairwise (x0, x1), (x2, x3) rope layout -> halves, so rotate_half applies (as HF does)."""
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def latent_attention(q_lat, q_pe, kv, pe, mask, scale: float):
    """Absorbed MLA attention: one shared kv head of width kv_rank + rope_dim; values = the latent itself.

    q_lat: [B, T, H, C]; q_pe: [B, T, H, R]; kv: [B, S, C]; pe: [B, S, R]; mask: bool [B, 1, T, S].
    Returns o_lat [B, T, H, C]. Softmax in fp32.
    """
    scores = torch.einsum("bthc,bsc->bhts", q_lat, kv) + torch.einsum("bthr,bsr->bhts", q_pe, pe)
    scores = (scores * scale).masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1).masked_fill(~mask.any(-1, keepdim=True), 0).to(q_lat.dtype)
    return torch.einsum("bhts,bsc->bthc", probs, kv)  # a query that sees no key gives zeros


def absorb_values(o_lat, w_uv):
    """W_UV absorbed: each head's latent output [B, T, H, C] through its value projection w_uv [H, V, C] ->
    [B, T, H, V]."""
    return torch.einsum("bthc,hvc->bthv", o_lat, w_uv)


class MLA(nn.Module):
    # linears that read x, run as one mm by zoo.compile (the q_proj group when q_lora_rank is None)
    packed_groups = (("q_a_proj", "kv_a_proj_with_mqa"), ("q_proj", "kv_a_proj_with_mqa"))

    def __init__(self, config: MLAConfig):
        super().__init__()
        c = self.config = config
        h = c.num_attention_heads
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(c.hidden_size, h * c.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=c.attention_bias)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank)
            self.q_b_proj = nn.Linear(c.q_lora_rank, h * c.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, bias=c.attention_bias)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, h * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
        self.o_proj = nn.Linear(h * c.v_head_dim, c.hidden_size, bias=c.attention_bias)
        self.rotary_emb = Rotary(c.qk_rope_head_dim, c.rope_theta, c.yarn)
        self.scale = softmax_scale(c)

    @classmethod
    def from_pretrained(cls, path, layer: int = 0, dtype=None, device=None, *, torch_dtype=None, device_map=None):
        """Layer `layer`'s attention from a DeepSeek-V3 / R1 checkpoint directory (transformers layout: config.json,
        sharded safetensors, keys model.layers.{layer}.self_attn.*); only the shards holding that layer are read.
        dtype / torch_dtype / device / device_map as the models' from_pretrained. The weights must be bf16, fp16
        or fp32: an FP8 release (with weight_scale_inv tensors) has to be dequantized first."""
        from ..checkpoint import _headers, build_pretrained, checkpoint_dir, load_args, read_config, resolve_dtype
        from ..checkpoint import weight_files
        dtype, device = load_args(dtype, torch_dtype, device, device_map)
        path = checkpoint_dir(path)
        raw = read_config(path)
        n_layers = raw.get("num_hidden_layers")
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0 or (n_layers is not None
                                                                                  and layer >= n_layers):
            raise InputError(f"layer must be an int in [0, {n_layers}) for this checkpoint, got {layer!r}")
        prefix = f"model.layers.{layer}.self_attn."
        scaled = [k for k in _headers(weight_files(path, prefix), prefix) if k.endswith("_scale_inv")]
        if scaled:
            raise CheckpointError(f"{path} stores layer {layer}'s attention in FP8 ({prefix}{scaled[0]} and "
                                  f"{len(scaled) - 1} more scales): dequantize the checkpoint to bf16 first")
        return build_pretrained(cls, MLAConfig.from_dict(raw), path, resolve_dtype(dtype, raw), device,
                                prefix=prefix)

    def new_cache(self, batch, max_len, dtype=None, device=None) -> MLACache:
        w = self.kv_b_proj.weight
        return MLACache(batch, max_len, self.config.kv_lora_rank, self.config.qk_rope_head_dim,
                        dtype or w.dtype, device or w.device)

    # ------------------------------------------------------------------ pieces
    def rope(self, positions, dtype):  # positions: [B, T] -> cos, sin [B, T, 1, R] in dtype
        return self.rotary_emb(positions, dtype)

    def project(self, x, positions):
        """x: [B, T, dim] -> q_nope [B, T, H, N], q_pe [B, T, H, R] (rotated), latent [B, T, C], k_pe [B, T, R]."""
        c, (b, t, _) = self.config, x.shape
        q = self.q_proj(x) if c.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q_nope, q_pe = q.view(b, t, -1, c.qk_head_dim).split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        if c.rope_interleave:
            q_pe, k_pe = deinterleave(q_pe), deinterleave(k_pe)
        cos, sin = self.rope(positions, x.dtype)
        q_pe, k_pe = apply_rotary(q_pe, k_pe[:, :, None, :], cos, sin)
        return q_nope, q_pe, self.kv_a_layernorm(latent), k_pe[:, :, 0, :]

    def check_inputs(self, x, cache, start_pos, seq_lens):
        """Shapes, then values: host lengths in plain Python (no torch op: these checks are most of a graphed
        call's host time), device lengths with one device read for both checks."""
        self.check_shapes(x, cache, start_pos, seq_lens)
        t, max_len = x.shape[1], cache.max_len
        if start_pos.device.type == "cpu":
            flags = host_value_flags(t, max_len, start_pos.tolist(), seq_lens.tolist())
        else:
            flags = value_flags(t, max_len, start_pos, seq_lens).tolist()
        raise_for_flags(flags, t, max_len, start_pos, seq_lens)

    def default_lengths(self, x, cache, start_pos, seq_lens, mode):
        """Types first (before anything touches the arguments), then seq_lens' default (T for every row)."""
        if mode not in ("absorb", "naive"):
            raise InputError(f"mode must be 'absorb' or 'naive', got {mode!r}")
        named = [("x", x), ("start_pos", start_pos)] + ([("seq_lens", seq_lens)] if seq_lens is not None else [])
        for name, v in named:
            if not isinstance(v, torch.Tensor):
                raise InputTypeError(f"{name} must be a torch.Tensor, got {type(v).__name__} {v!r:.60}")
        if not isinstance(cache, MLACache):
            raise InputTypeError(f"cache must be an MLACache (mla.new_cache(batch, max_len)), got "
                                 f"{type(cache).__name__}")
        if seq_lens is None:
            seq_lens = torch.full(start_pos.shape, x.shape[1] if x.ndim == 3 else 0, dtype=torch.long,
                                  device=start_pos.device)
        return seq_lens

    def check_shapes(self, x, cache, start_pos, seq_lens):
        """Everything checkable without reading device values."""
        c, b = self.config, x.shape[0]
        kv, weight = cache.kv, self.kv_b_proj.weight  # module attributes: looked up once (a call's host time)
        if x.ndim != 3 or x.shape[-1] != c.hidden_size:
            raise InputError(f"x must be [B, T, {c.hidden_size}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise InputTypeError(f"x must be a floating-point tensor, got {x.dtype}")
        for name, buf, width in (("kv", kv, c.kv_lora_rank), ("pe", cache.pe, c.qk_rope_head_dim)):
            if buf.ndim != 3 or buf.shape[-1] != width or buf.shape[:2] != kv.shape[:2]:
                raise InputError(f"cache.{name} must be [B, max_len, {width}] for this MLA (kv_lora_rank "
                                 f"{c.kv_lora_rank}, rope dim {c.qk_rope_head_dim}), got {tuple(buf.shape)}: a cache "
                                 "of another config?")
        if kv.shape[0] != b:
            raise InputError(f"cache holds {kv.shape[0]} rows but x has batch {b}")
        for name, v in (("start_pos", start_pos), ("seq_lens", seq_lens)):
            if v.shape != (b,) or v.dtype != torch.long:
                raise InputError(f"{name} must be a LongTensor of shape [{b}], got {v.dtype} {tuple(v.shape)}")
        if x.dtype != kv.dtype or x.dtype != weight.dtype:
            raise InputError(f"dtype mismatch: x {x.dtype}, cache {kv.dtype}, weights {weight.dtype}")
        lengths_on = start_pos.device
        if not (x.device == kv.device == weight.device) or lengths_on != seq_lens.device \
                or (lengths_on != x.device and lengths_on.type != "cpu"):
            raise InputError(f"device mismatch: x {x.device}, cache {kv.device}, weights {weight.device}, start_pos "
                             f"{start_pos.device}, seq_lens {seq_lens.device} (start_pos and seq_lens: both on x's "
                             "device or both on the CPU)")

    # ------------------------------------------------------------------ forward
    def forward(self, x, cache: MLACache, start_pos, seq_lens=None, mode="absorb"):
        """x: [B, T, dim] padded batch; start_pos [B]: tokens already cached per row; seq_lens [B]: valid new
        tokens per row (default T). Token t of row b sits at position start_pos[b] + t and attends to cache
        slots 0 .. start_pos[b] + t. Returns y [B, T, dim]; padding tokens give zeros and write nothing.
        start_pos / seq_lens may live on x's device or on the CPU (host-known lengths: checking them then
        needs no device read)."""
        seq_lens = self.default_lengths(x, cache, start_pos, seq_lens, mode)
        self.check_inputs(x, cache, start_pos, seq_lens)
        t = x.shape[1]
        kv_len = max(int((start_pos + seq_lens).max()), 1)  # only slots some query can see
        start_pos, seq_lens = to_device(start_pos, x.device), to_device(seq_lens, x.device)
        positions, valid = token_slots(start_pos, seq_lens, t)
        q_nope, q_pe, latent, k_pe = self.project(x, positions)

        write_cache(cache.kv, cache.pe, latent, k_pe, positions, valid)
        kv, pe = cache.kv[:, :kv_len], cache.pe[:, :kv_len]
        out = self.attend(q_nope, q_pe, kv, pe, attention_mask(positions, valid, kv_len), mode)
        return self.output(out, valid)

    def attend(self, q_nope, q_pe, kv, pe, mask, mode):
        """q_nope [B, T, H, N], q_pe [B, T, H, R]; kv [B, S, C], pe [B, S, R]; mask [B, 1, T, S] -> [B, T, H, V]."""
        c = self.config
        b, s = kv.shape[:2]
        wkv_b = self.kv_b_proj.weight.view(c.num_attention_heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank)
        if mode == "naive":
            k_nope, v = self.kv_b_proj(kv).view(b, s, -1, c.qk_nope_head_dim + c.v_head_dim).split(
                [c.qk_nope_head_dim, c.v_head_dim], dim=-1)  # [B, S, H, N], [B, S, H, V]
            k = torch.cat([k_nope, pe[:, :, None, :].expand(-1, -1, c.num_attention_heads, -1)], dim=-1)
            q = torch.cat([q_nope, q_pe], dim=-1)  # [B, T, H, N + R]
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, self.scale)
            return out.transpose(1, 2)
        q_lat = torch.einsum("bthn,hnc->bthc", q_nope, wkv_b[:, :c.qk_nope_head_dim])  # W_UK absorbed
        o_lat = latent_attention(q_lat, q_pe, kv, pe, mask, self.scale)  # [B, T, H, C]
        return absorb_values(o_lat, wkv_b[:, c.qk_nope_head_dim:])

    def output(self, out, valid):
        """o_proj; padding tokens give zeros. out: [B, T, H, V], valid: bool [B, T]."""
        y = self.o_proj(out.reshape(*out.shape[:2], -1))
        return y * valid[:, :, None].to(y.dtype)


def value_flags(t, max_len, start_pos, seq_lens):
    """bool [2]: (a length or start out of range, the cache would overflow), computed on the device."""
    bad_range = ((seq_lens < 0) | (seq_lens > t) | (start_pos < 0)).any()
    return torch.stack([bad_range, (start_pos + seq_lens > max_len).any()])


def host_value_flags(t, max_len, starts: list, lens: list):
    """value_flags for lengths on the host, in plain Python (no torch op per check)."""
    rows = list(zip(starts, lens))
    return [any(s < 0 or n < 0 or n > t for s, n in rows), any(s + n > max_len for s, n in rows)]


def raise_for_flags(flags, t, max_len, start_pos, seq_lens):
    bad_range, overflow = flags
    if bad_range:
        raise InputError(f"need 0 <= seq_lens <= T = {t} and start_pos >= 0; got seq_lens {seq_lens.tolist()}, "
                         f"start_pos {start_pos.tolist()}")
    if overflow:
        raise InputError(f"cache overflow: start_pos + seq_lens = {(start_pos + seq_lens).tolist()} exceeds max_len "
                         f"{max_len}")


def to_device(t, device):
    """Host metadata -> device without waiting for the device: an asynchronous copy from pageable memory returns
    once the driver has staged it (no device sync; measured on the H200: 4 us per call, 11 with pinning first)."""
    if t.device == device:
        return t
    return t.to(device, non_blocking=t.device.type == "cpu" and device.type == "cuda")


def token_slots(start_pos, seq_lens, t):
    """-> positions [B, T] (= cache slots: start_pos + t) and valid [B, T] (t < seq_lens)."""
    steps = torch.arange(t, device=start_pos.device)
    return start_pos[:, None] + steps, steps[None, :] < seq_lens[:, None]


def write_cache(kv, pe, latent, k_pe, positions, valid):
    """Cache slots positions[b, t] <- latent / k_pe for valid tokens only. kv [B, S, C], pe [B, S, R]."""
    b, t = valid.shape
    rows = torch.arange(b, device=valid.device)[:, None].expand(b, t)
    kv[rows[valid], positions[valid]] = latent[valid]
    pe[rows[valid], positions[valid]] = k_pe[valid]


def attention_mask(positions, valid, kv_len):
    """Token at position p sees cache slots 0..p; padding tokens see nothing. -> bool [B, 1, T, kv_len]."""
    mask = torch.arange(kv_len, device=positions.device)[None, None, :] <= positions[:, :, None]
    return (mask & valid[:, :, None])[:, None]
