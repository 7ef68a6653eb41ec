"""The peer: transformers' DeepseekV3Attention (eager attention) with its own DynamicCache."""
import torch
import transformers

from zoo_ref.deepseek.mla import to_device


def hf_deepseek_config(d: dict, **overrides):
    """transformers.DeepseekV3Config from a config.json dict (4.57 rope_scaling or 5.x rope_parameters)."""
    kw = {k: v for k, v in d.items() if k not in ("model_type", "architectures")}
    if int(transformers.__version__.split(".")[0]) >= 5 and "rope_scaling" in kw:
        rope = {**kw.pop("rope_scaling"), "rope_theta": kw.get("rope_theta", 10000.0)}
        rope["rope_type"] = rope.pop("type", rope.get("rope_type"))
        kw["rope_parameters"] = rope
    kw.setdefault("num_key_value_heads", kw["num_attention_heads"])
    config = transformers.DeepseekV3Config(**{**kw, "num_hidden_layers": 1, **overrides})
    config._attn_implementation = "eager"
    return config


class HFMLA:
    """Bench adapter: same calling convention as the zoo_ref methods in bench/mla.py."""
    name = "HF DeepseekV3Attention"

    def __init__(self, config_dict, state_dict, dtype, device):
        from transformers.models.deepseek_v3 import modeling_deepseek_v3 as m
        self.config = hf_deepseek_config(config_dict)
        with torch.device(device):
            self.attn = m.DeepseekV3Attention(self.config, layer_idx=0).to(dtype).eval()
            self.rotary = m.DeepseekV3RotaryEmbedding(self.config)
        self.attn.load_state_dict(state_dict, strict=True)
        self.dtype, self.device = dtype, torch.device(device)

    def new_cache(self, batch, histories, max_len):
        """A DynamicCache holding random history latents, left-padded to the longest history."""
        cache = transformers.DynamicCache(config=self.config)
        h = max(histories)
        if h:
            c = self.config
            cache.update(torch.randn(batch, 1, h, c.kv_lora_rank, dtype=self.dtype, device=self.device),
                         torch.randn(batch, 1, h, c.qk_rope_head_dim, dtype=self.dtype, device=self.device), 0)
        return cache, torch.tensor(histories, device=self.device), h

    def crop(self, state, histories):
        """Back to the history after a round (negative = tokens to remove: understood by 4.57 and 5.x)."""
        extra = state[0].get_seq_length() - state[2]
        if extra > 0:
            state[0].crop(-extra)

    def __call__(self, x, state, start, lens):
        cache, hist, h_pad = state
        start, lens = to_device(start, x.device), to_device(lens, x.device)
        b, t, _ = x.shape
        past = cache.get_seq_length()
        cols = torch.arange(past + t, device=x.device)
        q = torch.arange(t, device=x.device)
        hist_ok = (cols[None, :] >= h_pad - hist[:, None]) | (cols[None, :] >= h_pad)  # [B, S]
        new = cols - past  # index among this call's tokens
        new_ok = (new[None, None, :] <= q[None, :, None]) & (new[None, None, :] < lens[:, None, None])
        allowed = torch.where(cols[None, None, :] < past, hist_ok[:, None, :], new_ok)  # [B, T, S]
        mask = torch.zeros(b, 1, t, past + t, dtype=self.dtype, device=x.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(self.dtype).min)
        pos = start[:, None] + q[None, :]
        return self.attn(x, position_embeddings=self.rotary(x, pos), attention_mask=mask, past_key_values=cache)[0]
