"""Compiled MLA: the reference's call interface over the same latent cache, as one static-shape graph.

Differences from zoo_ref's eager forward, none in the math: the cache write is one op (zoo::mla_cache_write_,
padding writes nothing) instead of boolean indexing, and the mask comes from `zoo::mla_mask(start_pos, seq_lens)`
over the whole static cache instead of slicing to the longest row, so shapes never depend on data and decode
never recompiles. The attention pass turns absorbed attention over that mask into attention driven by the
lengths (no mask built, only visible slots read); naive mode keeps the mask (its keys are expanded from the whole
cache).
On GPU, calls replay CUDA graphs, one per (cache, mode, query bucket): decode (T = 1), and prefill with lengths
on the host, padded to the next power of two (the padding tokens are `seq_lens` padding: they write nothing and
their outputs are dropped), so a prefill costs one launch instead of a few hundred.
Absorbed prefill with lengths on the host runs packed when that saves tokens: only the rows' real tokens (padded to
a bucket of 1/16 octave) go through the projections, each token a batch row of one query over its own cache row
(zoo_ref's same project / attend / output on the token rows; the attention pass reads the cache rows in place, no
gathered copy). The graph derives the layout from the lengths, so the host copies in x and the lengths as for a
padded prefill and nothing more.
"""
import weakref

import torch

from zoo_ref.deepseek.mla import MLA, MLACache, raise_for_flags, to_device, token_slots, value_flags

from .compiler import Compiler
from .cuda_graphs import GRAPH_MAX_T, GraphRunner, StaticBuffers, length_bucket, packed_bucket
from .packing import PackedWeights
from .registry import register


@register(MLA)
class CompiledMLA:
    def __init__(self, mla: MLA, max_batch_size=None, max_seq_len=None, cuda_graphs=True,
                 passes=("attention", "rope", "linears"), cache_dir=None):
        """max_batch_size / max_seq_len are not used: an MLA's caches are the caller's (`new_cache`)."""
        self.mla, self.config = mla.eval(), mla.config
        w = mla.kv_b_proj.weight
        self.device, self.dtype = w.device, w.dtype
        self.compiler = Compiler(passes, cache_dir)
        self.packed = PackedWeights(mla)
        if "linears" in passes:
            self.packed.pack_declared()
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.graphs = GraphRunner(warmup=1) if self.cuda_graphs else None
        # one code object per mode, so Dynamo keeps their graphs (and recompile budgets) apart; decode (T = 1,
        # static) and prefill (T dynamic) are two graphs of it, counted under their own names
        fns = {"absorb": self._absorb_step, "naive": self._naive_step}
        self._steps = {(mode, phase): self.compiler(fn, f"mla[{mode}, {phase}]", dynamic=None)
                       for mode, fn in fns.items() for phase in ("prefill", "decode")}
        self._steps[("absorb", "packed")] = self.compiler(self._packed_step, "mla[absorb, packed]", dynamic=None)
        self.pack_prompts = "attention" in passes  # without it the packed step would gather [tokens, S] latents
        self._inputs, self._dead = {}, []  # graph inputs per cache; keys of caches since freed
        self._register_patterns()

    def new_cache(self, batch, max_len, dtype=None, device=None) -> MLACache:
        return self.mla.new_cache(batch, max_len, dtype, device)

    def _step(self, x, kv, pe, start_pos, seq_lens, mode):
        """-> (y, flags). The value checks run on the device: when `flags` has any bit set, nothing was
        written (so the caller can raise with the cache intact) and y is meaningless."""
        mla, t = self.mla, x.shape[1]
        flags = value_flags(t, kv.shape[1], start_pos, seq_lens)
        positions, valid = token_slots(start_pos, seq_lens, t)
        q_nope, q_pe, latent, k_pe = mla.project(x, positions)
        write_lens = torch.where(flags.any(), torch.zeros_like(seq_lens), seq_lens)
        torch.ops.zoo.mla_cache_write_(kv, pe, latent, k_pe, start_pos, write_lens)
        out = mla.attend(q_nope, q_pe, kv, pe, torch.ops.zoo.mla_mask(start_pos, seq_lens, t, kv.shape[1]), mode)
        return mla.output(out, valid), flags

    def _absorb_step(self, x, kv, pe, start_pos, seq_lens):
        return self._step(x, kv, pe, start_pos, seq_lens, "absorb")

    def _naive_step(self, x, kv, pe, start_pos, seq_lens):
        return self._step(x, kv, pe, start_pos, seq_lens, "naive")

    def _packed_step(self, x, kv, pe, lengths, token_ids):
        """x [B, T, dim], lengths [2, B] (start_pos, seq_lens), token_ids [N] = arange(N), N >= sum(seq_lens): the
        rows' real tokens packed into N (padded to a bucket), each a batch row of one query. zoo_ref's project,
        attend and output on those rows, over kv / pe gathered by row (index_select: the attention pass makes the
        kernel read the rows in place instead); y [B, T, dim] with zeros at the padding, as the reference. The
        layout is computed here, in the graph, from the lengths: the host only copies them in."""
        mla, (b, t, dim) = self.mla, x.shape
        start_pos, seq_lens = lengths.unbind(0)
        firsts = seq_lens.cumsum(0) - seq_lens  # [B]: each row's first packed token
        rows = (token_ids[:, None] >= firsts[None, :] + seq_lens[None, :]).sum(1)  # [N]; B for the bucket's padding
        valid = rows < b
        rows = torch.where(valid, rows, 0)
        offsets = torch.where(valid, token_ids - firsts[rows], 0)  # padding: row 0, slot start_pos[0], writes nothing
        slots = start_pos[rows] + offsets
        x_packed = x.reshape(b * t, dim).index_select(0, rows * t + offsets)[None]  # [1, N, dim]
        q_nope, q_pe, latent, k_pe = (y.transpose(0, 1) for y in mla.project(x_packed, slots[None]))  # [N, 1, ...]
        torch.ops.zoo.mla_cache_write_(kv, pe, latent, k_pe, slots, valid.long(), rows)
        mask = torch.ops.zoo.mla_mask(slots, valid.long(), 1, kv.shape[1])
        out = mla.attend(q_nope, q_pe, kv.index_select(0, rows), pe.index_select(0, rows), mask, "absorb")
        y = mla.output(out, valid[:, None])[:, 0]  # [N, dim]
        places = torch.arange(t, device=x.device)  # y's place (row, j) holds packed token firsts[row] + j
        kept = places[None, :] < seq_lens[:, None]  # [B, T]
        back = torch.where(kept, firsts[:, None] + places[None, :], 0)
        return torch.where(kept[..., None], y.index_select(0, back.flatten()).view(b, t, dim), 0)

    def _register_patterns(self):
        c = self.config
        with torch.no_grad(), self.compiler.manager.record_call_sites():
            for b, t in ((1, 1), (1, 2), (2, 1), (2, 2)):  # decode / prefill, batch 1 / batch > 1 layouts
                x = torch.zeros(b, t, c.hidden_size, dtype=self.dtype, device=self.device)
                cache = self.new_cache(b, 4)
                zero = torch.zeros(b, dtype=torch.long, device=self.device)
                for mode in ("absorb", "naive"):
                    self._step(x, cache.kv, cache.pe, zero, zero + t, mode)
                self._packed_step(x, cache.kv, cache.pe, torch.stack([zero, zero + t]),
                                  torch.arange(16, device=self.device))

    @torch.no_grad()
    def __call__(self, x, cache: MLACache, start_pos, seq_lens=None, mode="absorb"):
        """Same contract as zoo_ref.deepseek.MLA.forward. With start_pos / seq_lens on the CPU the value
        checks run on the host and the call never waits for the device; on the device they cost one read."""
        seq_lens = self.mla.default_lengths(x, cache, start_pos, seq_lens, mode)
        b, t = x.shape[:2]
        on_host = start_pos.device != x.device
        # the host knows the packed token count; the attention pass turns the row gather into the kernel's row index
        packed = self.pack_prompts and mode == "absorb" and t > 1 and start_pos.device.type == "cpu"
        if on_host or packed:  # values checked here, free on the host
            self.mla.check_inputs(x, cache, start_pos, seq_lens)
        else:  # values checked by the step itself (flags), read once it has run
            self.mla.check_shapes(x, cache, start_pos, seq_lens)
        self.packed.check()
        lengths = torch.stack([start_pos, seq_lens])  # [2, B]: start_pos, seq_lens, where the caller has them
        bucket = 1 if t == 1 else length_bucket(t)
        tokens = packed_bucket(max(1, sum(seq_lens.tolist()))) if packed else None
        if tokens is not None and tokens < b * bucket:  # packing saves tokens
            return self._packed_prefill(x, cache, lengths, tokens, bucket)
        step = self._steps[(mode, "decode" if t == 1 else "prefill")]
        if self.cuda_graphs and (t == 1 or (on_host and bucket <= GRAPH_MAX_T)):
            y, flags = self._replay(step, x, cache, lengths, (mode, bucket), bucket)
            y = y.clone() if t == bucket else y[:, :t].clone()
        else:
            if t > 1:
                torch._dynamo.mark_dynamic(x, 1)
            lengths = to_device(lengths, x.device)
            y, flags = step(x, cache.kv, cache.pe, lengths[0], lengths[1])
        if not on_host:  # waits for the step: the one sync
            raise_for_flags(flags.tolist(), t, cache.max_len, start_pos, seq_lens)
        return y

    def _packed_prefill(self, x, cache, lengths, tokens, bucket):
        """The prompt's real tokens packed into `tokens` (see _packed_step): with CUDA graphs, one graph per (tokens,
        x's length bucket, cache), inputs copied in as the padded prefill's."""
        t = x.shape[1]
        step = self._steps[("absorb", "packed")]
        if self.cuda_graphs and bucket <= GRAPH_MAX_T:
            y = self._replay(step, x, cache, lengths, ("absorb", ("packed", tokens, bucket)), bucket, tokens)
            return y.clone() if t == bucket else y[:, :t].clone()
        torch._dynamo.mark_dynamic(x, 1)
        token_ids = torch.arange(tokens, device=x.device)
        torch._dynamo.mark_dynamic(token_ids, 0)
        return step(x, cache.kv, cache.pe, to_device(lengths, x.device), token_ids)

    @staticmethod
    def _cache_key(cache):
        kv, pe = cache.kv, cache.pe
        return kv.data_ptr(), pe.data_ptr(), kv.shape, pe.shape, kv.stride(), pe.stride()

    def _static(self, key, cache, make):
        """The input buffers held for graph `key` = (mode, bucket, cache key), make() on first use. A graph bakes in
        the cache's addresses and shapes: keyed by both, a cache allocated where a freed one lived either matches
        it exactly or gets its own graphs; a cache's graphs go when it does."""
        while self._dead:
            dead = self._dead.pop()
            for k in [k for k in self._inputs if k[2] == dead]:
                self._inputs.pop(k)
                self.graphs.drop(k)
        static = self._inputs.get(key)
        if static is None:
            if not any(k[2] == key[2] for k in self._inputs):  # this cache's first graph: watch it once
                weakref.finalize(cache.kv, self._forget, key[2])
            static = self._inputs[key] = make()
        return static

    def _replay(self, step, x, cache, lengths, graph, bucket, tokens=None):
        """The step's CUDA graph for `graph` (mode and shape key) and this cache, inputs copied in: x padded to
        `bucket` tokens with zeros (seq_lens, checked against the real T, leaves the padding tokens out of the cache
        and the attention), the lengths straight from where they are (an asynchronous host copy, no device
        read); `tokens`: the packed step's token count (its token_ids, made once)."""
        b = x.shape[0]

        def make():  # held as plain tensors: a module's attribute lookups and two row views cost host time per call
            buffers = StaticBuffers(x=x.new_zeros(b, bucket, x.shape[2]),
                                    lengths=lengths.new_zeros(2, b, device=x.device))
            if bucket > 1:
                torch._dynamo.mark_dynamic(buffers.x, 1)  # one prefill graph for every bucket
            if tokens is None:  # the step takes start_pos, seq_lens
                return buffers, buffers.x, buffers.lengths, buffers.lengths.unbind(0)
            buffers.register_buffer("token_ids", torch.arange(tokens, device=x.device), persistent=False)
            torch._dynamo.mark_dynamic(buffers.token_ids, 0)  # one packed graph for every token count
            return buffers, buffers.x, buffers.lengths, (buffers.lengths, buffers.token_ids)
        key = (*graph, self._cache_key(cache))
        buffers, x_in, lengths_in, args = self._static(key, cache, make)
        t = x.shape[1]
        if t == x_in.shape[1]:
            x_in.copy_(x)
        else:
            x_in[:, :t].copy_(x)
            if tokens is None:  # the packed step never reads past t
                x_in[:, t:].zero_()
        lengths_in.copy_(lengths, non_blocking=True)  # from pageable memory: staged by the driver, no device wait
        return self.graphs.run(key, step, x_in, cache.kv, cache.pe, *args, state=buffers)

    forward = __call__

    def _forget(self, cache_key):
        self._dead.append(cache_key)  # dropped at the next call, never from inside a capture (a GC can run there)
