"""Generation, once for every model: the setup, the decode loop, and the reference generate.

A model joins by offering `embed`, `rope_positions`, `decode_positions`, `decode_hidden`, `text_config` and
`banned_token_ids` (see causal_lm.py). `decode_loop` is the one loop (eos, padding of finished rows, streaming);
zoo's compiled runtime drives the same loop with its CUDA-graph step.

Batches are left-padded (attention_mask 0 on the left). Each row's positions continue from its prompt: the
runtime and the reference agree on that through the model's own `rope_positions` / `decode_positions`.
"""
import torch

from .decoder import causal_mask, new_caches
from .errors import InputError, InputTypeError
from .inputs import check_count, check_tokens
from .rope import DynamicRope
from .sampling import sample_next, sampling_params, seen_tokens


def generation_setup(model, input_ids, attention_mask, max_new_tokens, eos_token_id=None, pad_token_id=None,
                     **sampling):
    """Every argument checked -> (SamplingParams per row, eos ids [n] tensor, pad id for finished rows,
    valid [B, T] bool)."""
    vocab = model.text_config.vocab_size
    valid = check_tokens(input_ids, attention_mask, vocab, generating=True)
    check_count("max_new_tokens", max_new_tokens)
    device = input_ids.device
    params = sampling_params(input_ids.shape[0], device=device, **sampling)
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    eos = [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos
    if not isinstance(eos, (list, tuple)) or not all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        raise InputTypeError(f"eos_token_id must be an int or a list of ints, got {eos_token_id!r}")
    if pad_token_id is not None and (not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool)
                                     or not 0 <= pad_token_id < vocab):
        raise InputError(f"pad_token_id must be a token id in [0, {vocab}), got {pad_token_id!r}")
    eos = torch.tensor(list(eos), device=device, dtype=torch.long)
    pad = next((p for p in (pad_token_id, model.config.pad_token_id, *eos.tolist()) if p is not None), 0)
    return params, eos, pad, valid


def decode_loop(first, advance, max_new_tokens, eos, pad, check_every=1, streamer=None):
    """first: the token [B] chosen from the prompt; advance(token [B]) feeds it and returns the next [B].

    Finished rows (they produced an eos) are filled with `pad` and feed it. Whether every row has finished is
    read every `check_every` steps (each read waits for the device); steps run past that point are dropped.
    streamer: transformers-style (`put(tokens)`, `end()`), fed each step's tokens (then every step is read).
    Returns tokens [B, n <= max_new_tokens]."""
    if streamer is not None:
        check_every = 1
    done = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    out, all_done, token = [], [], first
    for i in range(max_new_tokens):
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        if streamer is not None:
            streamer.put(token.cpu())
        done = done | torch.isin(token, eos)
        all_done.append(done.all())
        if i == max_new_tokens - 1 or (i % check_every == 0 and bool(done.all())):
            break
        token = advance(token)
    n = len(out)
    if eos.numel():  # drop steps taken after every row had finished
        finished = torch.stack(all_done).nonzero()
        n = int(finished[0, 0]) + 1 if len(finished) else n
    if streamer is not None:
        streamer.end()
    return torch.stack(out[:n], dim=1)


@torch.no_grad()
def generate(model, input_ids, attention_mask=None, max_new_tokens=32, do_sample=False, temperature=1.0, top_k=0,
             top_p=1.0, repetition_penalty=1.0, seed=None, eos_token_id=None, pad_token_id=None,
             return_logits=False, streamer=None, **inputs):
    """Prefill a static KV cache, then decode token by token. Returns new tokens [B, <= max_new_tokens] (rows
    that stopped are filled with pad_token_id), and with return_logits=True also the logits [B, steps, vocab]
    each token was chosen from.

    Sampling settings are scalars or one value per row; `seed` (int, per-row list, or None) keys the
    counter-based noise, so a seed gives the same tokens on every run (see zoo_ref.sampling).
    eos_token_id: int or list (default: the config's); generation stops when every row has produced one.
    inputs: the model's extra inputs (Qwen3-VL: pixel_values, image_grid_thw, ...)."""
    params, eos, pad, valid = generation_setup(
        model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, do_sample=do_sample,
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed)
    c = model.text_config
    b, t = input_ids.shape
    max_len = t + max_new_tokens
    if max_len > c.max_position_embeddings and not isinstance(getattr(c, "yarn", None), DynamicRope):
        # (dynamic NTK scaling exists to run past max_position_embeddings)
        raise InputError(f"prompt + max_new_tokens = {max_len} exceeds max_position_embeddings "
                         f"{c.max_position_embeddings}")
    device = input_ids.device
    key_valid = torch.zeros(b, max_len, dtype=torch.bool, device=device)
    key_valid[:, :t] = valid
    caches = new_caches(c, b, max_len, model.lm_head.weight.dtype, device)

    x, deepstack = model.embed(input_ids, **inputs)
    positions, next_pos = model.rope_positions(input_ids, valid, **inputs)
    slots = torch.arange(t, device=device)
    logits = model.decode_hidden(x, positions, causal_mask(key_valid, slots), deepstack, caches, slots)[:, -1]
    seen = seen_tokens(input_ids, valid, logits.shape[-1])
    banned = torch.tensor(model.banned_token_ids, dtype=torch.long, device=device)
    all_logits = [logits]

    def choose(logits, step):
        token = sample_next(logits, seen, params, torch.tensor(step, device=device), banned)
        seen.scatter_(1, token[:, None], True)
        return token

    def advance(token):  # token i (i = tokens fed so far) goes to slot t + i at position next_pos + i
        i = len(all_logits) - 1
        slot = torch.tensor([t + i], device=device)
        key_valid[:, t + i] = True
        pos = model.decode_positions(next_pos + i)
        logits = model.decode_hidden(model.decoder.embed_tokens(token[:, None]), pos, causal_mask(key_valid, slot),
                                     caches=caches, cache_pos=slot)[:, -1]
        all_logits.append(logits)
        return choose(logits, i + 1)

    if streamer is not None:
        streamer.put(input_ids.cpu())
    tokens = decode_loop(choose(logits, 0), advance, max_new_tokens, eos, pad, streamer=streamer)
    return (tokens, torch.stack(all_logits[:tokens.shape[1]], dim=1)) if return_logits else tokens
