"""Hypothesis strategies and builders shared by the tests: tiny configs, paired HF/zoo_ref models, inputs."""
import os

import torch
import transformers
from hypothesis import strategies as st

from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict

TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
# ZOO_TEST_CUDA=1 runs the compiled-vs-reference tests on the GPU (CUDA graphs, Triton kernels); CPU in CI
DEVICE = torch.device("cuda" if os.environ.get("ZOO_TEST_CUDA") else "cpu")
TEXT_IDS = (7, 100)  # ids of ordinary characters in the tiny vocab (specials are 0..6)


@st.composite
def qwen3_vl_configs(draw):
    head_dim = draw(st.sampled_from([8, 16, 32]))
    half = head_dim // 2
    h = draw(st.integers(0, half // 2))
    w = draw(st.integers(0, half // 2))
    kv = draw(st.sampled_from([1, 2]))
    v_heads = draw(st.sampled_from([1, 2]))
    v_head_dim = draw(st.sampled_from([8, 16]))
    v_depth = draw(st.integers(1, 3))
    layers = draw(st.integers(1, 3))
    n_deep = draw(st.integers(0, min(layers, v_depth)))
    deepstack = sorted(draw(st.lists(st.integers(0, v_depth - 1), min_size=n_deep, max_size=n_deep, unique=True)))
    return tiny_config_dict(
        hidden=draw(st.sampled_from([32, 64])), layers=layers, heads=kv * draw(st.sampled_from([1, 2, 4])),
        kv_heads=kv, head_dim=head_dim, mrope_section=(half - h - w, h, w),
        v_hidden=v_heads * v_head_dim, v_depth=v_depth, v_heads=v_heads, v_intermediate=48,
        patch=draw(st.sampled_from([4, 8])), merge=draw(st.sampled_from([1, 2])),
        temporal=draw(st.sampled_from([1, 2])), deepstack=deepstack, pos_side=draw(st.integers(2, 6)),
        intermediate=96, tie=draw(st.booleans()), spelling=draw(st.sampled_from(["5.x", "4.57"])))


def paired_models(config_dict, seed=0):
    """(transformers model, zoo_ref model) with the same random weights, fp32, eval mode."""
    hf_config = transformers.Qwen3VLConfig(**config_dict)
    hf_config._attn_implementation = "eager"
    hf_config.text_config._attn_implementation = "eager"
    hf_config.vision_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = randomize_(transformers.Qwen3VLForConditionalGeneration(hf_config), seed).eval()
    ours = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(config_dict)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


@st.composite
def vl_inputs(draw, config_dict, batch=None, kinds=("text", "image", "images", "video", "mixed")):
    """Random prompt(s) with placeholders + matching pixel tensors. Left-pads rows to one length."""
    v = config_dict["vision_config"]
    m, p, tp = v["spatial_merge_size"], v["patch_size"], v["temporal_patch_size"]
    batch = batch or draw(st.sampled_from([1, 2]))
    kind = draw(st.sampled_from(kinds))
    rows, image_grids, video_grids = [], [], []
    for _ in range(batch):
        ids = draw(st.lists(st.integers(*TEXT_IDS), min_size=1, max_size=6))
        n_img = {"text": 0, "image": 1, "images": draw(st.integers(2, 3)), "video": 0, "mixed": 1}[kind]
        n_vid = 1 if kind in ("video", "mixed") else 0
        for _ in range(n_img):
            g = [1, m * draw(st.integers(1, 5)), m * draw(st.integers(1, 5))]
            image_grids.append(g)
            ids += [3] + [5] * (g[1] * g[2] // m ** 2) + [4] + draw(st.lists(st.integers(*TEXT_IDS), max_size=3))
        for _ in range(n_vid):
            g = [draw(st.integers(1, 3)), m * draw(st.integers(1, 3)), m * draw(st.integers(1, 4))]
            video_grids.append(g)
            for _ in range(g[0]):  # per temporal patch: timestamp text, start, pads, end
                ids += [8, 9] + [3] + [6] * (g[1] * g[2] // m ** 2) + [4]
        ids += draw(st.lists(st.integers(*TEXT_IDS), min_size=1, max_size=4))
        rows.append(ids)
    t = max(len(r) for r in rows)
    input_ids = torch.tensor([[0] * (t - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (t - len(r)) + [1] * len(r) for r in rows])
    seed = draw(st.integers(0, 2 ** 16))
    g = torch.Generator().manual_seed(seed)
    out = {"input_ids": input_ids, "attention_mask": mask}
    for name, grids in (("image", image_grids), ("video", video_grids)):
        if grids:
            grid = torch.tensor(grids)
            n = int(grid.prod(-1).sum())
            out["pixel_values" if name == "image" else "pixel_values_videos"] = torch.randn(
                n, 3 * tp * p * p, generator=g)
            out[f"{name}_grid_thw"] = grid
    return out


def hf_logits(hf, inputs):
    """transformers' logits, with its own get_rope_index for the M-RoPE positions."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    mm = (ids == 5).int() + 2 * (ids == 6).int()
    rope_kw = {"mm_token_type_ids": mm} if TRANSFORMERS_5 else {}
    pos, _ = hf.model.get_rope_index(ids, image_grid_thw=kw.get("image_grid_thw"),
                                     video_grid_thw=kw.get("video_grid_thw"), attention_mask=mask, **rope_kw)
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, position_ids=pos, **kw, **rope_kw).logits


# ---------------------------------------------------------------------------------------------- MLA
@st.composite
def mla_config_dicts(draw):
    """A DeepSeek-V3 config.json dict at toy size: q_lora on/off, YaRN on/off, interleaved rope on/off."""
    rope_dim = draw(st.sampled_from([4, 8, 16]))
    d = {"model_type": "deepseek_v3", "hidden_size": draw(st.sampled_from([32, 48, 64])),
         "num_attention_heads": draw(st.sampled_from([1, 2, 4])),
         "q_lora_rank": draw(st.sampled_from([None, 16, 24])), "kv_lora_rank": draw(st.sampled_from([8, 16, 32])),
         "qk_nope_head_dim": draw(st.sampled_from([8, 16])), "qk_rope_head_dim": rope_dim,
         "v_head_dim": draw(st.sampled_from([8, 16, 24])), "rope_interleave": draw(st.booleans()),
         "max_position_embeddings": 2048, "rope_theta": 10000.0}
    d["num_key_value_heads"] = d["num_attention_heads"]
    if draw(st.booleans()):
        d["rope_scaling"] = {"type": "yarn", "factor": draw(st.sampled_from([4.0, 40.0])),
                             "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1,
                             "mscale": draw(st.sampled_from([1.0, 0.707])), "mscale_all_dim": 1.0}
    return d


def hf_mla(config_dict, seed=0):
    """(transformers DeepseekV3Attention, its rotary embedding, its config), random weights, fp32."""
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as m

    from bench.mla_peer import hf_deepseek_config
    from zoo_ref.qwen3_vl.tiny import randomize_
    config = hf_deepseek_config(config_dict)
    attn = randomize_(m.DeepseekV3Attention(config, layer_idx=0), seed).eval()
    return attn, m.DeepseekV3RotaryEmbedding(config), config


# ---------------------------------------------------------------------------------------------- Qwen3 / Qwen2
@st.composite
def dense_config_dicts(draw, family):
    """A Qwen3 / Qwen2 config.json dict at toy size: GQA ratios (MQA included), head dims, tied or not, RoPE scaling
    (YaRN for Qwen3; linear, llama3, dynamic NTK and LongRoPE for both; both spellings) or none, sliding-window layers
    on or off."""
    kv = draw(st.sampled_from([1, 2]))
    theta = draw(st.sampled_from([10000.0, 1e6]))
    d = {"model_type": family, "vocab_size": 96, "hidden_size": draw(st.sampled_from([32, 64])),
         "intermediate_size": 80, "num_hidden_layers": draw(st.integers(1, 3)),
         "num_attention_heads": kv * draw(st.sampled_from([1, 2, 4])), "num_key_value_heads": kv,
         "head_dim": draw(st.sampled_from([8, 16, 32])), "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
         "tie_word_embeddings": draw(st.booleans()), "eos_token_id": 2, "pad_token_id": 0, "bos_token_id": 1,
         "use_sliding_window": False, "hidden_act": "silu"}
    if draw(st.booleans()):  # sliding-window layers from max_window_layers on (windows shorter than the prompts)
        d.update(use_sliding_window=True, sliding_window=draw(st.integers(1, 6)),
                 max_window_layers=draw(st.integers(0, d["num_hidden_layers"])))
    kind = draw(st.sampled_from(["default", "yarn", "linear", "llama3", "dynamic", "longrope"] if family == "qwen3"
                                else ["default", "linear", "llama3", "dynamic", "longrope"]))
    factor = draw(st.sampled_from([2.0, 4.0]))
    half = d["head_dim"] // 2
    # dynamic / longrope switch frequencies once a call passes a length: short ones, so prompts and generations cross
    switch = draw(st.integers(4, 12))
    per_frequency = st.lists(st.floats(1.0, 8.0, width=32), min_size=half, max_size=half)
    rope = {"default": {"rope_type": "default"},
            "yarn": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": 64},
            "linear": {"rope_type": "linear", "factor": factor},
            "llama3": {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32},
            "dynamic": {"rope_type": "dynamic", "factor": factor},
            "longrope": {"rope_type": "longrope", "original_max_position_embeddings": switch,
                         "short_factor": draw(per_frequency), "long_factor": draw(per_frequency),
                         **({"factor": factor} if draw(st.booleans()) else {})}}[kind]
    if kind == "dynamic":
        d["max_position_embeddings"] = switch
    if draw(st.sampled_from(["5.x", "4.57"])) == "5.x":
        d["rope_parameters"] = {**rope, "rope_theta": theta}
    else:
        d.update(rope_theta=theta, rope_scaling=rope if kind != "default" else None)
    return d


def paired_dense(config_dict, seed=0):
    """(transformers Qwen3/Qwen2ForCausalLM, zoo_ref twin) with the same random weights (biases non-zero), fp32."""
    from zoo_ref.qwen2 import Qwen2ForCausalLM
    from zoo_ref.qwen3 import Qwen3ForCausalLM
    hf_cls, hf_config_cls, ours_cls = {
        "qwen3": (transformers.Qwen3ForCausalLM, transformers.Qwen3Config, Qwen3ForCausalLM),
        "qwen2": (transformers.Qwen2ForCausalLM, transformers.Qwen2Config, Qwen2ForCausalLM)}[config_dict["model_type"]]
    hf_config = hf_config_cls(**{k: v for k, v in config_dict.items() if k != "model_type"})
    hf_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = randomize_(hf_cls(hf_config), seed).eval()
    ours = ours_cls(ours_cls.config_class.from_dict(config_dict)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


@st.composite
def text_batches(draw, vocab=96, batch=None, max_len=10):
    """Left-padded random prompts: (input_ids [B, T], attention_mask [B, T])."""
    batch = batch or draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, max_len), min_size=batch, max_size=batch))
    t = max(lengths)
    rows = [draw(st.lists(st.integers(3, vocab - 1), min_size=n, max_size=n)) for n in lengths]
    ids = torch.tensor([[0] * (t - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (t - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def hf_positions(mask):
    """transformers generate's position ids for a left-padded batch."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
