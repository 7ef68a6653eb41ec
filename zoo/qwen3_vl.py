"""Compiled Qwen3-VL: static KV cache, prefill compiled for dynamic lengths, decode per batch bucket with
its state and sampling inside the graph (CUDA-graph captured on GPU), vision encoder compiled.

All math is zoo_ref's (the same modules, called in a compile-friendly order); the passes swap its
attention and RoPE for fused kernels.
"""
import functools

import torch
from torch import nn

from zoo_ref.qwen3_vl.model import causal_mask
from zoo_ref.qwen3_vl.generate import generation_setup
from zoo_ref.qwen3_vl.positions import mrope_positions
from zoo_ref.qwen3_vl.text import KVCache
from zoo_ref.sampling import SamplingParams, sample_next

from .compiler import Compiler
from .cuda_graphs import GraphRunner, StaticBuffers
from .packing import PackedWeights


def decode_state(batch, max_len, vocab, device):
    """Everything a decode step reads and advances (the CUDA graph's inputs and outputs)."""
    def zeros(*shape, dtype=torch.long):
        return torch.zeros(shape, dtype=dtype, device=device)
    return StaticBuffers(tokens=zeros(batch), positions=zeros(batch), slot=zeros(1),
                         key_valid=zeros(batch, max_len, dtype=torch.bool), seen=zeros(batch, vocab, dtype=torch.bool))


class CompiledQwen3VL:
    EOS_CHECK_EVERY = 8

    def __init__(self, model, max_batch_size=8, max_seq_len=2048, cuda_graphs=True, passes=("attention", "rope", "linears")):
        self.model, self.config = model.eval(), model.config
        w = model.lm_head.weight
        self.device, self.dtype, self.max_len = w.device, w.dtype, max_seq_len
        self.compiler = Compiler(passes)
        self.packed = PackedWeights(model)
        if "linears" in passes:
            for layer in model.model.language_model.layers:
                a, m = layer.self_attn, layer.mlp
                self.packed.pack(a.q_proj, a.k_proj, a.v_proj)
                self.packed.pack(m.gate_proj, m.up_proj)
        self.buckets = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < max_batch_size} | {max_batch_size})
        c = self.config.text
        full = [KVCache(max_batch_size, c.num_key_value_heads, max_seq_len, c.head_dim, self.dtype, self.device)
                for _ in range(c.num_hidden_layers)]
        self.caches = {b: nn.ModuleList(KVCache.over(x.k[:b], x.v[:b]) for x in full) for b in self.buckets}
        self.states = {b: decode_state(b, max_seq_len, c.vocab_size, self.device) for b in self.buckets}
        self.placeholders = torch.tensor([self.config.image_token_id, self.config.video_token_id], device=self.device)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.graphs = GraphRunner() if self.cuda_graphs else None
        self._prefills = {}  # (bucket, all_logits) -> compiled prefill (dynamic length)
        self._layouts, self._vision_inputs = {}, {}  # per distinct image/video grids
        self._vision = self.compiler(model.model.visual.encode, "vision", dynamic=True)
        self._decoders = {}
        self._register_patterns()

    # ------------------------------------------------------------------ graph bodies (zoo_ref math)
    def _prefill_fn(self, caches, x, positions, deepstack, key_valid, slots, all_logits: bool):
        mask = causal_mask(key_valid, slots)
        h = self.model.model.language_model(x, positions, mask, deepstack.unbind(0), caches, slots)
        return self.model.lm_head(h if all_logits else h[:, -1])

    def _decode_fn(self, caches, state, params):
        b = state.tokens.shape[0]
        x = self.model.model.language_model.embed_tokens(state.tokens[:, None])
        state.key_valid.index_fill_(1, state.slot, True)
        positions = state.positions.view(1, b, 1).expand(3, b, 1)
        logits = self.model.decode_hidden(x, positions, causal_mask(state.key_valid, state.slot), caches=caches,
                                          cache_pos=state.slot)[:, -1]
        token = sample_next(logits.index_fill(-1, self.placeholders, float("-inf")), state.seen, params)
        state.seen.scatter_(1, token[:, None], True)
        state.tokens.copy_(token)
        state.positions.add_(1)
        state.slot.add_(1)
        return logits

    def _register_patterns(self):
        """Run each graph body once eagerly on tiny inputs so the passes learn every call-site layout
        (batch 1 and batch > 1 trace differently: a transposed q only needs a copy when B > 1)."""
        for b in sorted({self.buckets[0], self.buckets[-1]}):
            self._record(b)

    def _record(self, b):
        t, v = 3, self.config.vision
        with torch.no_grad(), self.compiler.manager.record_call_sites():
            x = torch.zeros(b, t, self.config.text.hidden_size, dtype=self.dtype, device=self.device)
            levels = torch.zeros(len(v.deepstack_visual_indexes), *x.shape, dtype=self.dtype, device=self.device)
            key_valid = torch.ones(b, self.max_len, dtype=torch.bool, device=self.device)
            pos = torch.zeros(3, b, t, dtype=torch.long, device=self.device)
            for all_logits in (False, True):
                self._prefill_fn(self.caches[b], x, pos, levels, key_valid, torch.arange(t, device=self.device),
                                 all_logits)
            self._decode_fn(self.caches[b], self.states[b], SamplingParams())
            m = v.spatial_merge_size
            grid = torch.tensor([[1, 2 * m, 2 * m]], device=self.device)
            pixels = torch.zeros(int(grid.prod()), v.patch_dim, dtype=self.dtype, device=self.device)
            self.model.model.visual(pixels, grid)
        for buf in self.states[b].buffers():  # the eager decode above advanced the state: reset it
            buf.zero_()

    # ------------------------------------------------------------------ pieces
    @torch.no_grad()
    def encode_vision(self, pixels, grid_thw):
        """The compiled vision encoder; on GPU one CUDA graph per distinct set of grids (layout memoized)."""
        key = tuple(map(tuple, grid_thw.tolist()))
        if key not in self._layouts:
            self._layouts[key] = self.model.model.visual.layout(grid_thw)
        layout = self._layouts[key]
        if not self.cuda_graphs:
            return self._vision(pixels.to(self.dtype), *layout)
        if key not in self._vision_inputs:
            self._vision_inputs[key] = StaticBuffers(pixels=pixels.to(self.dtype))
        inputs = self._vision_inputs[key]
        inputs.pixels.copy_(pixels)
        merged, levels = self.graphs.run(("vision", key), self._vision, inputs.pixels, *layout, state=inputs)
        return merged.clone(), [x.clone() for x in levels]

    def _bucket(self, b):
        for bucket in self.buckets:
            if bucket >= b:
                return bucket
        raise ValueError(f"batch {b} exceeds max_batch_size {self.buckets[-1]}")

    def _prepare(self, input_ids, attention_mask, extra_tokens, **visual):
        """Embeddings, positions and key mask, padded to the batch bucket."""
        b, t = input_ids.shape
        if t + extra_tokens > self.max_len:
            raise ValueError(f"cache overflow: prompt {t} + {extra_tokens} new tokens > max_seq_len {self.max_len}")
        bucket = self._bucket(b)
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        x, deepstack = self.model.embed(input_ids, vision=self.encode_vision, **visual)
        positions, deltas = mrope_positions(input_ids, self.config, visual.get("image_grid_thw"),
                                            visual.get("video_grid_thw"), valid)
        levels = torch.zeros(len(self.config.vision.deepstack_visual_indexes), bucket, t, x.shape[-1],
                             dtype=x.dtype, device=x.device)
        if deepstack:
            levels[:, :b] = torch.stack(deepstack)
        pad = bucket - b  # extra rows: dummy sequences, never read
        x = torch.cat([x, x.new_zeros(pad, t, x.shape[-1])])
        positions = torch.cat([positions, torch.arange(t, device=x.device).expand(3, pad, t)], dim=1)
        valid_b = torch.cat([valid, valid.new_ones(pad, t)])
        key_valid = torch.zeros(bucket, self.max_len, dtype=torch.bool, device=x.device)
        key_valid[:, :t] = valid_b
        return bucket, x, positions, levels, key_valid, valid, deltas

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def __call__(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                 video_grid_thw=None, attention_mask=None):
        """Full-sequence logits [B, T, vocab], like the reference's forward."""
        self.packed.check()
        b, t = input_ids.shape
        bucket, x, pos, levels, key_valid, _, _ = self._prepare(
            input_ids, attention_mask, 0, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw)
        slots = torch.arange(t, device=x.device)
        return self._prefill(bucket, True)(self.caches[bucket], x, pos, levels, key_valid, slots)[:b]

    forward = __call__

    def _prefill(self, bucket, all_logits):
        key = (bucket, all_logits)
        if key not in self._prefills:
            name = f"{'forward' if all_logits else 'prefill'}[b={bucket}]"
            self._prefills[key] = self.compiler(functools.partial(self._prefill_fn, all_logits=all_logits), name,
                                                dynamic=True)
        return self._prefills[key]

    def _decoder(self, bucket, params):
        key = (bucket, params)
        if key not in self._decoders:
            fn = self.compiler(functools.partial(self._decode_fn, params=params), f"decode[b={bucket}]")
            self._decoders[key] = fn
        return self._decoders[key]

    @torch.no_grad()
    def generate(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                 video_grid_thw=None, attention_mask=None, max_new_tokens=32, do_sample=False, temperature=1.0,
                 top_k=0, top_p=1.0, repetition_penalty=1.0, seed=None, eos_token_id=None, pad_token_id=None,
                 return_logits=False):
        """Same arguments and results as zoo_ref's generate (sampling draws from torch's global RNG, seeded
        by `seed`, so sampled tokens differ from the reference's; greedy tokens are the same)."""
        params, eos, pad = generation_setup(self.config, max_new_tokens, eos_token_id, pad_token_id, self.device,
                                            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                            repetition_penalty=repetition_penalty)
        self.packed.check()
        if seed is not None:
            torch.manual_seed(seed)
        b, t = input_ids.shape
        bucket, x, pos, levels, key_valid, valid, deltas = self._prepare(
            input_ids, attention_mask, max_new_tokens, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw)
        slots = torch.arange(t, device=self.device)
        logits = self._prefill(bucket, False)(self.caches[bucket], x, pos, levels, key_valid, slots)

        state = self.states[bucket]
        state.key_valid.copy_(key_valid)
        state.seen.zero_()
        ids = torch.cat([input_ids, input_ids.new_zeros(bucket - b, t)])
        state.seen.scatter_(1, ids.masked_fill(~key_valid[:, :t], 0), key_valid[:, :t])
        first = sample_next(logits.index_fill(-1, self.placeholders, float("-inf")), state.seen, params)
        state.seen.scatter_(1, first[:, None], True)
        state.tokens.copy_(first)
        state.positions.copy_(torch.cat([valid.sum(-1) + deltas, torch.full((bucket - b,), t, device=self.device)]))
        state.slot.fill_(t)

        step = self._decoder(bucket, params)
        run = (lambda: self.graphs.run((bucket, params), step, self.caches[bucket], state)) if self.cuda_graphs \
            else (lambda: step(self.caches[bucket], state))
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        out, all_done, all_logits = [], [], [logits[:b]]
        token = first[:b]
        for i in range(max_new_tokens):
            token = torch.where(done, torch.full_like(token, pad), token)
            out.append(token)
            done = done | torch.isin(token, eos)
            all_done.append(done.all())
            # Reading `done` syncs with the GPU, so only look every few steps: the queue stays full.
            if i == max_new_tokens - 1 or (i % self.EOS_CHECK_EVERY == 0 and bool(done.all())):
                break
            state.tokens[:b] = token  # finished rows feed padding, like the reference
            logits = run()
            if return_logits:
                all_logits.append(logits[:b].clone())
            token = state.tokens[:b].clone()
        n = len(out)
        if eos.numel():  # drop steps taken after every row had finished
            finished = torch.stack(all_done).nonzero()
            n = int(finished[0, 0]) + 1 if len(finished) else n
        tokens = torch.stack(out[:n], dim=1)
        return (tokens, torch.stack(all_logits[:n], dim=1)) if return_logits else tokens
