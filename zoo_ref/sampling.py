"""Next-token selection: greedy or sampled (temperature, top-k, top-p, repetition penalty), per row.

Every setting is a per-row tensor, so one batch can mix settings (row 0 greedy, row 1 top_p 0.9) and a compiled
decode step takes them as inputs: one graph serves every setting. Written with fixed shapes and no host syncs
so the compiled step can run it inside a CUDA graph.

Randomness is counter-based: the noise for (row, step, token) is a hash of the row's seed, the step and the
token id. The call owns it (no global RNG state is read or reseeded while decoding), the same seed gives the
same tokens on every run, and the reference and the compiled model draw the very same noise.
"""
import numbers
from dataclasses import dataclass

import torch

from .errors import InputError

_M32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """(x * c) mod 2^32 for int64 x in [0, 2^32) without int64 overflow (c split in 16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x):
    """A 32-bit integer finalizer (murmur3's fmix32): every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def uniform_noise(seeds, step, vocab: int):
    """U(0, 1) noise [B, vocab] fp32, a pure function of (seeds [B], step [] or [B], token id)."""
    row = _mix32((_mix32(seeds & _M32) + _mul32((step & _M32) + 1, 0x9E3779B1)) & _M32)  # [B]
    ids = torch.arange(vocab, device=seeds.device)
    h = _mix32((row[:, None] + _mul32(ids, 0x61C88647)[None, :]) & _M32)
    return ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class SamplingParams:
    """Per-row settings as tensors (each [B]); build with `sampling_params`."""
    do_sample: torch.Tensor     # bool
    temperature: torch.Tensor   # fp32, > 0
    top_k: torch.Tensor         # long, 0 = off
    top_p: torch.Tensor         # fp32 in (0, 1], 1 = off
    repetition_penalty: torch.Tensor  # fp32, > 0, 1 = off
    seed: torch.Tensor          # long in [0, 2^32)

    FIELDS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")

    def rows(self, index):
        return SamplingParams(*(getattr(self, f)[index] for f in self.FIELDS))


def _per_row(name, value, batch, dtype, check, what):
    values = value.tolist() if isinstance(value, torch.Tensor) else value
    values = list(values) if isinstance(values, (list, tuple)) else [values] * batch
    if len(values) != batch:
        raise InputError(f"{name} has {len(values)} per-row values but the batch has {batch} rows")
    for v in values:
        if isinstance(v, bool) != (dtype is torch.bool) or not isinstance(v, numbers.Real) or not check(v):
            raise InputError(f"{name} must be {what}, got {v!r}")
    return torch.tensor(values, dtype=dtype)


def sampling_params(batch, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
                    seed=None, device=None) -> SamplingParams:
    """Validate settings (a scalar for every row or one value per row) -> SamplingParams on `device`.

    seed: an int (row i draws with seed + i), a list of per-row ints, or None (fresh seeds from torch's global
    generator, which is read, never reseeded)."""
    def finite(v):
        return v == v and abs(v) != float("inf")
    if seed is None:
        seed = torch.randint(0, 2 ** 31, (1,)).item()
    if isinstance(seed, int) and not isinstance(seed, bool):
        seed = [(seed + i) % 2 ** 32 if 0 <= seed < 2 ** 32 else seed for i in range(batch)]
    p = SamplingParams(
        do_sample=_per_row("do_sample", do_sample, batch, torch.bool, lambda v: isinstance(v, bool), "a bool"),
        temperature=_per_row("temperature", temperature, batch, torch.float32, lambda v: finite(v) and v > 0,
                             "a finite number > 0 (use do_sample=False for greedy)"),
        top_k=_per_row("top_k", top_k, batch, torch.long, lambda v: float(v).is_integer() and v >= 0,
                       "an int >= 0 (0 = off)"),
        top_p=_per_row("top_p", top_p, batch, torch.float32, lambda v: finite(v) and 0 < v <= 1, "in (0, 1]"),
        repetition_penalty=_per_row("repetition_penalty", repetition_penalty, batch, torch.float32,
                                    lambda v: finite(v) and v > 0, "a finite number > 0 (1 = off)"),
        seed=_per_row("seed", seed, batch, torch.long, lambda v: float(v).is_integer() and 0 <= v < 2 ** 32,
                      "an int in [0, 2^32)"))
    return SamplingParams(*(getattr(p, f).to(device) for f in SamplingParams.FIELDS))


def seen_tokens(input_ids, valid, vocab: int):
    """bool [B, vocab]: the tokens each row's valid prompt positions hold (for the repetition penalty)."""
    counts = torch.zeros(input_ids.shape[0], vocab, dtype=torch.long, device=input_ids.device)
    counts.scatter_add_(1, input_ids.masked_fill(~valid, 0), valid.long())
    return counts > 0


def apply_repetition_penalty(logits, seen, penalty):
    """logits: [B, V] fp32; seen: bool [B, V]; penalty [B] (CTRL-style; 1 leaves a row unchanged exactly)."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def keep_threshold(logits, top_k, top_p):
    """[B, 1]: the smallest logit each row keeps under its top-k and top-p (tokens below it are filtered).
    logits [B, V] fp32; top_k [B] long (0 = off; ties with the k-th value stay); top_p [B] (1 = off; the nucleus is
    computed on the top-k-filtered softmax: a token goes when the mass strictly before it in sorted order already
    reaches top_p, so the top token always stays; tokens tied with the last kept one stay too).

    The one step that sorts the vocabulary; everything else in sampling is elementwise or an argmax."""
    v = logits.shape[-1]
    sorted_logits = torch.sort(logits, dim=-1, descending=True).values
    rank = torch.arange(v, device=logits.device)
    k = torch.where(top_k > 0, top_k.clamp(max=v), v)
    kth = torch.where(rank[None, :] < k[:, None], sorted_logits, float("inf")).amin(-1, keepdim=True)
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    # softmax of rows sorted in descending order, whose first entry is their maximum (written out: torch's softmax
    # runs one thread block per row, 63 us for a 152k vocabulary on an H200, against a few us for these three)
    probs = (sorted_logits - sorted_logits[:, :1]).exp()
    probs = probs / probs.sum(-1, keepdim=True)
    keep = (((probs.cumsum(-1) - probs) < top_p[:, None]) | (top_p >= 1)[:, None]) & (sorted_logits > float("-inf"))
    keep[:, 0] = True  # the top token always stays (also when every logit is -inf)
    return torch.where(keep, sorted_logits, float("inf")).amin(-1, keepdim=True)


def filter_top_k_top_p(logits, top_k, top_p):
    """Mask (to -inf) everything outside each row's top-k and top-p nucleus (see keep_threshold)."""
    return logits.masked_fill(logits < keep_threshold(logits, top_k, top_p), float("-inf"))


def last_argmax(x):
    return x.argmax(-1)


def sample_next(logits, seen, params: SamplingParams, step, banned=None, threshold=keep_threshold,
                argmax=last_argmax, any_sampled=True):
    """logits [B, V]; seen bool [B, V]; step: the index of the token being chosen ([] or [B] long);
    banned: token ids never chosen ([n] long, or None). Returns next tokens [B] (long).

    Sampled rows take the Gumbel-max of the filtered, tempered logits with `uniform_noise` (an exact draw from
    their softmax); greedy rows take the argmax after the repetition penalty. `threshold` / `argmax`: keep_threshold
    and the argmax over the last dim, or the same computations run another way (zoo's decode graph runs the first
    as an opaque op and the second as two reductions). any_sampled=False: the caller knows no row samples, so the
    sampled branch, which torch.where would discard, is not computed (a top-k/top-p sort of the vocabulary)."""
    logits = logits.float()
    if banned is not None and banned.numel():
        logits = logits.index_fill(-1, banned, float("-inf"))
    logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    greedy = argmax(logits)
    if not any_sampled:
        return greedy
    tempered = logits / params.temperature[:, None]
    tempered = tempered.masked_fill(tempered < threshold(tempered, params.top_k, params.top_p), float("-inf"))
    gumbel = -torch.log(-torch.log(uniform_noise(params.seed, step, logits.shape[-1])))
    sampled = argmax(tempered + gumbel)
    return torch.where(params.do_sample, sampled, greedy)
