"""The compiled-decoder runtime every zoo text model shares: batch buckets, static KV caches, decode state,
prefill (dynamic length) and decode (per batch bucket, sampling settings as graph inputs) through compiled layer
regions (zoo/regions.py: one layer's graph runs every layer), hand-captured CUDA graphs of whole steps, packed-weight
checks and pattern recording. The generate loop is zoo_ref's own (decode_loop).

A model joins through zoo_ref's generation interface (`embed`, `rope_positions`, `decode_positions`, `decoder`
(a DecoderModel), `lm_head`, `text_config`, `banned_token_ids`, declared `packed_groups`): `CompiledDecoder` serves
every `zoo_ref.causal_lm.CausalLM` (Qwen3, Qwen2) as is; Qwen3-VL adds its vision encoder in zoo/qwen3_vl.py.
"""
import functools
from typing import NamedTuple

import torch
from torch import nn

from compile_passes.windows import WINDOW_KERNEL_MAX_QUERIES, prompt_mask, window_mask
from zoo_ref.causal_lm import CausalLM
from zoo_ref.decoder import new_caches, run_layer, token_window
from zoo_ref.errors import InputError
from zoo_ref.generation import decode_loop, generation_setup
from zoo_ref.inputs import check_count, check_tokens
from zoo_ref.sampling import SamplingParams, keep_threshold, sample_next, sampling_params, seen_tokens

from .compiler import Compiler
from .cuda_graphs import GRAPH_MAX_T, GraphRunner, StaticBuffers, length_bucket
from .packing import PackedWeights
from .prefix import PrefixCache
from .regions import Regions, eager
from .registry import register

DEFAULTS = sampling_params(1, seed=0)  # a greedy row: what padding rows of a bucket run with


class Prompt(NamedTuple):
    """A prompt ready for the prefill graph, padded to its batch bucket (and to two tokens)."""
    bucket: int
    ids: torch.Tensor         # [bucket, T]
    x: torch.Tensor           # [bucket, T, hidden] embeddings
    positions: torch.Tensor   # the rotary module's positions ([bucket, T] or [3, bucket, T])
    levels: torch.Tensor      # [levels, bucket, T, hidden] deepstack features (0 levels for text models)
    valid: torch.Tensor       # bool [bucket, T]: the tokens (padding rows of the bucket: all)
    key_start: torch.Tensor   # [bucket] each row's tokens fill cache slots [key_start, key_end)
    key_end: torch.Tensor     # [bucket]
    padded: bool              # some row's window is not the whole prompt (a graph of its own: see _prefill_fn)
    next_pos: torch.Tensor    # [B] each real row's next position


def decode_state(batch, max_len, vocab, device):
    """Everything a decode step reads and advances (the CUDA graph's inputs and outputs), sampling settings
    included: per-row tensors, so one graph serves every setting."""
    def zeros(*shape, dtype=torch.long):
        return torch.zeros(shape, dtype=dtype, device=device)
    params = {f: getattr(DEFAULTS, f).expand(batch).to(device) for f in SamplingParams.FIELDS}
    return StaticBuffers(tokens=zeros(batch), positions=zeros(batch), slot=zeros(1), step=zeros(1),
                         key_start=zeros(batch), seen=zeros(batch, vocab, dtype=torch.bool), **params)


def params_of(state) -> SamplingParams:
    return SamplingParams(*(getattr(state, f) for f in SamplingParams.FIELDS))


@torch.library.custom_op("zoo::keep_threshold", mutates_args=())
def keep_threshold_op(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """zoo_ref's top-k/top-p threshold (a sort of the vocabulary and a few ops on it), opaque to Inductor inside
    the decode graph; its kernels are captured in the CUDA graph like the rest. Inductor's fusion of these
    reductions over a 152k vocabulary failed to compile at batch 8 on the H100 (Triton codegen TypeError in a
    split reduction); the rest of the sampler (penalty, noise, argmax) is fused as usual."""
    return keep_threshold(logits, top_k, top_p)


@keep_threshold_op.register_fake
def _(logits, top_k, top_p):
    return logits.new_empty(logits.shape[0], 1)


def split_argmax(x, chunk: int = 1024):
    """x.argmax(-1) for x [B, V] as two reductions: the maximum of each chunk of the row, then the first chunk holding
    the row's maximum. The same index as torch (the first maximum; NaN counts as the maximum), but Inductor runs an
    arg-reduction over a row in one program (it splits none): ~100 us for a 152k vocabulary on an H200."""
    b, v = x.shape
    n = -(-v // chunk)
    x = nn.functional.pad(x, (0, n * chunk - v), value=float("-inf"))  # after every real entry: never first
    values, where = x.view(b, n, chunk).max(-1)  # [B, n] each chunk's maximum and its first index
    best = values.argmax(-1, keepdim=True)  # [B, 1]
    return (best * chunk + where.gather(-1, best))[:, 0]


class PromptSlots(nn.Module):
    """A static cache as a prompt written from slot 0 sees it: `update` writes the prompt's K/V and returns what its
    slots [0, T) now hold, i.e. the K/V themselves: prefill attention never touches the buffer (and a prompt as
    long as the buffer traces like any other: a slice of the whole buffer made Dynamo guard on T != S)."""

    def __init__(self, cache):
        super().__init__()
        self.cache = cache

    def update(self, pos, k, v):
        self.cache.update(pos, k, v)
        return k, v


def _pad(x, dim, n):
    """x with n zeros appended along dim: always a new tensor (a graph input that is a view in one call and not in
    the next fails a Dynamo guard: a recompile)."""
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x, x.new_zeros(shape)], dim)


@register(CausalLM)
class CompiledDecoder:
    EOS_CHECK_EVERY = 8

    def __init__(self, model, max_batch_size=8, max_seq_len=2048, cuda_graphs=True,
                 passes=("attention", "rope", "linears"), cache_dir=None):
        check_count("max_batch_size", max_batch_size)
        check_count("max_seq_len", max_seq_len)
        self.model, self.config = model.eval(), model.config
        c = self.text = model.text_config
        w = model.lm_head.weight
        self.device, self.dtype, self.max_len = w.device, w.dtype, max_seq_len
        self.compiler = Compiler(passes, cache_dir)
        self.packed = PackedWeights(model)
        if "linears" in passes:
            self.packed.pack_declared()
        self.buckets = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < max_batch_size} | {max_batch_size})
        full = new_caches(c, max_batch_size, max_seq_len, self.dtype, self.device)
        self.caches = {b: nn.ModuleList(type(x).over(x.k[:b], x.v[:b]) for x in full) for b in self.buckets}
        self.prompt_caches = {b: nn.ModuleList(PromptSlots(x) for x in caches) for b, caches in self.caches.items()}
        self.states = {}  # bucket -> decode state, made when the bucket is first used
        self.banned = torch.tensor(model.banned_token_ids, dtype=torch.long, device=self.device)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.graphs = GraphRunner() if self.cuda_graphs else None
        self._layer_regions, self._decoders, self._step_inputs = {}, {}, {}
        self._sites = self._layer_sites()
        self.prefix = PrefixCache(model)  # what the last batch-1 generate left in the cache (zoo/prefix.py)
        self._register_patterns()

    # ------------------------------------------------------------------ graph bodies (zoo_ref math)
    # Each layer runs through a compiled region (zoo/regions.py) that builds the reference's mask from each row's
    # token window by zoo ops the attention pass recognizes: it swaps in attention over the window itself, so the
    # mask is never materialized. Prompts without padding run plain causal attention (the fastest kernels);
    # padded ones attend by window.
    @staticmethod
    def _prompt_layer(layer, x, cos, sin, cache, cache_pos, key_start, key_end, window: int, padded: bool):
        """A prompt written from slot 0: query t sits at slot t (cache_pos = arange(T))."""
        mask = prompt_mask(key_start, key_end, x.shape[1], padded)
        return run_layer(layer, x, cos, sin, mask, cache, cache_pos, window)

    def _window_layer(self, layer, x, cos, sin, cache, cache_pos, key_start, key_end, window: int):
        """Queries at slots cache_pos (decode: one; a conversation turn: the suffix) over each row's window."""
        mask = window_mask(key_start, key_end, cache_pos, self.max_len)
        return run_layer(layer, x, cos, sin, mask, cache, cache_pos, window)

    def _prefill_fn(self, layers, caches, x, positions, deepstack, key_start, key_end, last, all_logits: bool):
        """last: [1] index of the prompt's last token (a prompt padded to a length bucket ends before x does)."""
        slots = torch.arange(x.shape[1], device=x.device)
        h = self.model.decoder(x, positions, (key_start, key_end), deepstack.unbind(0), caches, slots,
                               layers.decoder_layer, norm=False)
        return self._head(h if all_logits else h.index_select(1, last)[:, 0])

    def _extend_fn(self, layers, caches, x, positions, deepstack, key_start, key_end, last, query_slots):
        """A prompt's suffix after a prefix already in the cache: its tokens at query_slots attend to every slot
        of the window before them (decode's structure, several queries). last: [1] index of its last token."""
        h = self.model.decoder(x, positions, (key_start, key_end), deepstack.unbind(0), caches, query_slots,
                               layers.decoder_layer, norm=False)
        return self._head(h.index_select(1, last)[:, 0])

    def _head(self, h):
        """The final norm and the lm_head: per token, so a prompt's last token is the only one normed."""
        return self.model.lm_head(self.model.decoder.norm(h))

    def _decode_fn(self, layers, step_inputs, sample, caches, state):
        x, rope, key_end = step_inputs(state)
        h = self.model.decoder(x, None, (state.key_start, key_end), (), caches, state.slot, layers.decoder_layer,
                               norm=False, rope=rope)
        return sample(h, state)

    def _inputs_fn(self, state):
        """A decode step's inputs from its state, in one compiled graph (eagerly, the rotary tables alone were ~18
        tiny kernels a step): the fed tokens' embeddings, the rotary tables at their positions, the rows' window
        end (the slot being written + 1)."""
        x = self.model.decoder.embed_tokens(state.tokens[:, None])
        rope = self.model.decoder.rotary_emb(self.model.decode_positions(state.positions), x.dtype)
        return x, rope, (state.slot + 1).expand_as(state.key_start)

    def _sample_fn(self, h, state, any_sampled=True):
        """The step's head and sampling in one compiled graph: the final norm and lm_head (in a batch-1 step the
        norm folds into the lm_head's GEMV instead of eight eager kernels), the next tokens, the state advanced.
        h: [B, 1, hidden] the last layer's output -> logits [B, vocab]."""
        logits = self._head(h)[:, -1]
        token = sample_next(logits, state.seen, params_of(state), state.step, self.banned, keep_threshold_op,
                            split_argmax, any_sampled)
        state.seen.scatter_(1, token[:, None], True)
        state.tokens.copy_(token)
        state.positions.add_(1)
        state.slot.add_(1)
        state.step.add_(1)
        return logits

    def _layer_sites(self) -> dict:
        """id(layer module) -> its name in explain's sites."""
        return {id(layer): f"layers.{i}" for i, layer in enumerate(self.model.decoder.layers)}

    def _regions(self, kind, bucket, padded=False):
        """The compiled layer regions of a graph kind ("prefill", "extend", "decode") and batch bucket."""
        key = (kind, bucket, padded)
        if key not in self._layer_regions:
            name = f"{kind}[b={bucket}{', padded' if padded else ''}]"
            body = functools.partial(self._prompt_layer, padded=padded) if kind == "prefill" else self._window_layer
            self._layer_regions[key] = Regions(self.compiler, name, body, kind != "decode", self._sites)
        return self._layer_regions[key]

    def _register_patterns(self):
        """Run each graph body once eagerly on tiny inputs so the passes learn every call-site layout
        (batch 1 and batch > 1 trace differently: a transposed q only needs a copy when B > 1)."""
        prompt, window = eager(functools.partial(self._prompt_layer, padded=False)), eager(self._window_layer)
        for b in sorted({self.buckets[0], self.buckets[-1]}):
            with torch.no_grad(), self.compiler.manager.record_call_sites():
                t = 3
                x = torch.zeros(b, t, self.text.hidden_size, dtype=self.dtype, device=self.device)
                levels = torch.zeros(self._levels(), *x.shape, dtype=self.dtype, device=self.device)
                start = torch.zeros(b, dtype=torch.long, device=self.device)
                pos, _ = self.model.rope_positions(torch.zeros(b, t, dtype=torch.long, device=self.device),
                                                   torch.ones(b, t, dtype=torch.bool, device=self.device))
                last = torch.tensor([t - 1], device=self.device)
                self._prefill_fn(prompt, self.prompt_caches[b], x, pos, levels, start, start + t, last, False)
                self._decode_fn(window, self._inputs_fn, self._sample_fn, self.caches[b],
                                decode_state(b, self.max_len, self.text.vocab_size, self.device))
                if b == 1:
                    self._extend_fn(window, self.caches[b], x, pos, levels, start, start + t, last,
                                    torch.arange(t, device=x.device))
        with torch.no_grad(), self.compiler.manager.record_call_sites():
            self._record_extra()  # bodies whose layouts do not depend on the batch bucket: once

    def _record_extra(self):
        """Other compiled bodies a model has (Qwen3-VL: the vision encoder)."""

    def _levels(self) -> int:
        """Deepstack levels the prefill takes (Qwen3-VL's visual features; 0 for text models)."""
        return 0

    # ------------------------------------------------------------------ pieces
    def embed(self, input_ids, **inputs):
        return self.model.embed(input_ids, **inputs)

    def _bucket(self, b):
        for bucket in self.buckets:
            if bucket >= b:
                return bucket
        raise InputError(f"batch {b} exceeds max_batch_size {self.buckets[-1]}")

    def _prepare(self, input_ids, valid, extra_tokens, inputs):
        """Embeddings, positions and key mask, padded to the batch bucket -> a Prompt. A one-token prompt gets one
        leading padding slot: Dynamo specializes a length of 1, and every prompt should share one dynamic graph."""
        b, t = input_ids.shape
        if t + extra_tokens > self.max_len:
            raise InputError(f"cache overflow: prompt {t} + {extra_tokens} new tokens > max_seq_len {self.max_len}")
        if t == 1 and self.max_len > 1 + extra_tokens:
            input_ids = torch.cat([torch.zeros_like(input_ids), input_ids], 1)
            valid = torch.cat([torch.zeros_like(valid), valid], 1)
            t = 2
        bucket = self._bucket(b)
        x, deepstack = self.embed(input_ids, **inputs)
        positions, next_pos = self.model.rope_positions(input_ids, valid, **inputs)
        levels = torch.zeros(self._levels(), bucket, t, x.shape[-1], dtype=x.dtype, device=x.device)
        if deepstack:
            levels[:, :b] = torch.stack(deepstack)
        pad = bucket - b  # extra rows: dummy sequences, never read
        x = torch.cat([x, x.new_zeros(pad, t, x.shape[-1])])
        dummy_pos, _ = self.model.rope_positions(input_ids.new_zeros(pad, t), valid.new_ones(pad, t))
        positions = torch.cat([positions, dummy_pos], dim=-2)  # batch is the second-to-last dim
        valid = torch.cat([valid, valid.new_ones(pad, t)])
        ids = torch.cat([input_ids, input_ids.new_zeros(pad, t)])
        key_start, key_end = token_window(valid)
        return Prompt(bucket, ids, x, positions, levels, valid, key_start, key_end, not bool(valid.all()), next_pos)

    def _prefill(self, bucket, all_logits, padded):
        return functools.partial(self._prefill_fn, self._regions("prefill", bucket, padded), all_logits=all_logits)

    def _last_logits(self, kind, fn, caches, p, start):
        """The last-token logits [bucket, vocab] of tokens [start, T) of prompt p: a whole prompt (kind "prefill",
        start 0) or the suffix after a reused prefix ("extend"). Up to a bound the tokens are padded to a
        power-of-two count (on every device: the CPU tests cover it) and, on CUDA, replayed from a graph per
        (kind, batch bucket, count, padded). The padding tokens come after every row's last token (generate's rows
        are left-padded): they extend each window to the end, so a prompt stays unpadded for the attention (plain
        causal), causality keeps them out of the real tokens, and the decode overwrites their cache slots."""
        n = p.x.shape[1] - start
        # bounds: prompts past GRAPH_MAX_T amortize their launches; a suffix past the window kernel's query limit
        # takes the attention's dense path, which reads a bound on the host (not capturable)
        bound = GRAPH_MAX_T if kind == "prefill" else WINDOW_KERNEL_MAX_QUERIES
        nb = max(n, min(length_bucket(n), self.max_len - start)) if n <= bound else n
        extra = nb - n
        inputs = dict(x=_pad(p.x[:, start:], 1, extra), positions=_pad(p.positions[..., start:], -1, extra),
                      levels=_pad(p.levels[:, :, start:], 2, extra), key_start=p.key_start,
                      key_end=p.key_end + extra, last=torch.full((1,), n - 1, device=self.device))
        if kind == "extend":
            inputs["query_slots"] = torch.arange(start, start + nb, device=self.device)
        if not (self.cuda_graphs and n <= bound):
            return fn(caches, *inputs.values())
        return self.graphs.run_static((kind, p.bucket, nb, p.padded), fn, caches, **inputs).clone()

    def _vision_items(self, input_ids, inputs) -> list:
        """[(start, end, content key)] of the vision items in a one-row prompt (none in text models)."""
        return []

    def _decoder(self, bucket, any_sampled=True):
        """The decode step of a batch bucket. A call whose rows are all greedy gets a step of its own without the
        sampling branch (no top-k/top-p sort of the vocabulary): two steps per bucket at most, whatever the settings."""
        key = (bucket, any_sampled)
        if key not in self._decoders:
            fn = self._sample_fn if any_sampled else functools.partial(self._sample_fn, any_sampled=False)
            sample = self.compiler(fn, f"{'sample' if any_sampled else 'greedy'}[b={bucket}]")
            if bucket not in self._step_inputs:  # shared by the bucket's greedy and sampled steps
                self._step_inputs[bucket] = self.compiler(self._inputs_fn, f"inputs[b={bucket}]")
            self._decoders[key] = functools.partial(self._decode_fn, self._regions("decode", bucket),
                                                    self._step_inputs[bucket], sample)
        if bucket not in self.states:
            self.states[bucket] = decode_state(bucket, self.max_len, self.text.vocab_size, self.device)
        return self._decoders[key]

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None, **inputs):
        """Full-sequence logits [B, T, vocab], like the reference's forward."""
        valid = check_tokens(input_ids, attention_mask, self.text.vocab_size)
        self.packed.check()
        b, t = input_ids.shape
        p = self._prepare(input_ids, valid, 0, inputs)
        self.prefix.forget()  # this call writes the cache
        logits = self._prefill(p.bucket, True, p.padded)(self.prompt_caches[p.bucket], p.x, p.positions, p.levels,
                                                         p.key_start, p.key_end, p.key_end[:1] - 1)
        return logits[:b, -t:]

    forward = __call__

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens=32, do_sample=False, temperature=1.0, top_k=0,
                 top_p=1.0, repetition_penalty=1.0, seed=None, eos_token_id=None, pad_token_id=None,
                 return_logits=False, streamer=None, **inputs):
        """Same arguments and results as zoo_ref's generate (sampled tokens too: both draw the same seeded noise)."""
        params, eos, pad, valid = generation_setup(
            self.model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
        self.packed.check()
        b = input_ids.shape[0]
        p = self._prepare(input_ids, valid, max_new_tokens, inputs)
        bucket, t = p.bucket, p.ids.shape[1]
        one_row = b == 1 and not p.padded
        items = self._vision_items(input_ids, inputs) if one_row else []
        reuse = self.prefix.match(p.ids[0], items) if one_row else 0
        self.prefix.forget()  # this call writes the cache
        if reuse:  # only the suffix: its queries see the held prefix's K/V
            extend = functools.partial(self._extend_fn, self._regions("extend", 1))
            logits = self._last_logits("extend", extend, self.caches[1], p, reuse)
        else:
            logits = self._last_logits("prefill", self._prefill(bucket, False, p.padded), self.prompt_caches[bucket],
                                       p, 0)
        self.prefix.count(reuse, t - reuse)
        any_sampled = bool(params.do_sample.any())
        step = self._decoder(bucket, any_sampled)

        state = self.states[bucket]
        state.key_start.copy_(p.key_start)
        state.seen.copy_(seen_tokens(p.ids, p.valid, self.text.vocab_size))
        for f in SamplingParams.FIELDS:  # padding rows run greedy
            getattr(state, f).copy_(getattr(DEFAULTS, f).expand(bucket))
            getattr(state, f)[:b] = getattr(params, f)
        first = sample_next(logits, state.seen, params_of(state), state.step.zero_(), self.banned)
        state.seen.scatter_(1, first[:, None], True)
        state.tokens.copy_(first)
        state.positions.copy_(torch.cat([p.next_pos, torch.full((bucket - b,), t, device=self.device)]))
        state.slot.fill_(t)
        state.step.fill_(1)

        caches = self.caches[bucket]
        run = (lambda: self.graphs.run(("decode", bucket, any_sampled), step, caches, state)) if self.cuda_graphs \
            else (lambda: step(caches, state))
        all_logits, fed = [logits[:b]], []

        def advance(token):
            state.tokens[:b] = token  # finished rows feed padding, like the reference
            fed.append(token)  # its K/V go to the next slot
            logits = run()
            if return_logits:
                all_logits.append(logits[:b].clone())
            return state.tokens[:b].clone()

        if streamer is not None:
            streamer.put(input_ids.cpu())
        tokens = decode_loop(first[:b], advance, max_new_tokens, eos, pad, self.EOS_CHECK_EVERY, streamer)
        if one_row:  # the next turn of this conversation can start from here
            self.prefix.hold(torch.cat([p.ids[0], *fed]), items)
        return (tokens, torch.stack(all_logits[:tokens.shape[1]], dim=1)) if return_logits else tokens
