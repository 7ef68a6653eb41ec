"""Reference generation: prefill into a static KV cache, then token-by-token decode.

Batches are left-padded (attention_mask 0 on the left). Decode positions continue each row's M-RoPE
positions: position = cache slot - padding + rope_delta, the same on all three rows.
"""
import torch

from ..sampling import SamplingParams, sample_next
from .model import causal_mask
from .positions import mrope_positions
from .text import KVCache


def new_caches(model, batch, max_len, dtype=None, device=None):
    c = model.config.text
    w = model.lm_head.weight
    return [KVCache(batch, c.num_key_value_heads, max_len, c.head_dim, dtype or w.dtype, device or w.device)
            for _ in range(c.num_hidden_layers)]


def generation_setup(config, max_new_tokens, eos_token_id, pad_token_id, device, **sampling):
    """Validated sampling params, the stop ids (tensor) and the padding id for finished rows."""
    params = SamplingParams(**sampling)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = config.eos_token_id if eos_token_id is None else eos_token_id
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos), device=device, dtype=torch.long)
    pad = next((p for p in (pad_token_id, config.pad_token_id, *eos.tolist()) if p is not None), 0)
    return params, eos, pad


@torch.no_grad()
def generate(model, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
             video_grid_thw=None, attention_mask=None, max_new_tokens=32, do_sample=False, temperature=1.0,
             top_k=0, top_p=1.0, repetition_penalty=1.0, seed=None, eos_token_id=None, pad_token_id=None,
             return_logits=False):
    """Returns new tokens [B, <= max_new_tokens] (rows that stopped are filled with pad_token_id), and with
    return_logits=True also the logits [B, steps, vocab] each token was chosen from.

    eos_token_id: int or list (default: the config's); generation stops when every row has produced one.
    The image/video placeholder ids are never chosen: they are input-only, and a generated one could not
    be fed back (it would claim visual features that do not exist).
    """
    params, eos, pad = generation_setup(model.config, max_new_tokens, eos_token_id, pad_token_id, input_ids.device,
                                        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                        repetition_penalty=repetition_penalty)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)

    b, t = input_ids.shape
    max_len = t + max_new_tokens
    if max_len > model.config.text.max_position_embeddings:
        raise ValueError(f"prompt + max_new_tokens = {max_len} exceeds max_position_embeddings "
                         f"{model.config.text.max_position_embeddings}")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    key_valid = torch.zeros(b, max_len, dtype=torch.bool, device=input_ids.device)
    key_valid[:, :t] = valid
    caches = new_caches(model, b, max_len)

    x, deepstack = model.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
    positions, deltas = mrope_positions(input_ids, model.config, image_grid_thw, video_grid_thw, valid)
    slots = torch.arange(t, device=input_ids.device)
    logits = model.decode_hidden(x, positions, causal_mask(key_valid, slots), deepstack, caches, slots)[:, -1]
    next_pos = valid.sum(-1) + deltas  # [B]: the position of each row's next token

    vocab = logits.shape[-1]
    seen = torch.zeros(b, vocab, dtype=torch.bool, device=input_ids.device)
    seen.scatter_(1, input_ids.masked_fill(~valid, 0), valid)
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    out, all_logits = [], []
    placeholders = torch.tensor([model.config.image_token_id, model.config.video_token_id], device=input_ids.device)
    for step in range(max_new_tokens):
        token = sample_next(logits.index_fill(-1, placeholders, float("-inf")), seen, params, generator)
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        all_logits.append(logits)
        seen.scatter_(1, token[:, None], ~done[:, None])
        done |= torch.isin(token, eos)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        slot = torch.tensor([t + step], device=input_ids.device)
        key_valid[:, t + step] = True
        x = model.model.language_model.embed_tokens(token[:, None])
        pos = next_pos.view(1, b, 1).expand(3, b, 1)
        logits = model.decode_hidden(x, pos, causal_mask(key_valid, slot), caches=caches, cache_pos=slot)[:, -1]
        next_pos = next_pos + 1
    tokens = torch.stack(out, dim=1)
    return (tokens, torch.stack(all_logits, dim=1)) if return_logits else tokens
