"""zoo_ref MLA vs transformers' DeepseekV3Attention; batching, padding, caches, chained decode, errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import hf_mla, mla_config_dicts
from zoo_ref.deepseek import MLA, MLAConfig, MLAConfigError
from zoo_ref.deepseek.mla import host_value_flags, value_flags
from zoo_ref.layers import relative_error

WORST = {"rel_err": 0.0}


def hf_request(attn, rotary, config, history_x, new_x):
    """One request through transformers with its own cache: history prefill, then new tokens with an offset
    causal mask. Returns the new tokens' output [1, n, dim]."""
    from transformers import DynamicCache
    cache = DynamicCache(config=config)
    out = None
    start = 0
    for x in (history_x, new_x):
        n = x.shape[1]
        if n == 0:
            continue
        pos = torch.arange(start, start + n)[None]
        allowed = torch.arange(start + n)[None, :] <= pos[0, :, None]  # [n, start + n]
        mask = torch.zeros(1, 1, n, start + n).masked_fill(~allowed, torch.finfo(torch.float32).min)
        with torch.no_grad():
            out = attn(x, position_embeddings=rotary(x, pos), attention_mask=mask, past_key_values=cache)[0]
        start += n
    return out


def ours_from(attn, config_dict):
    ours = MLA(MLAConfig.from_dict(config_dict)).eval()
    ours.load_state_dict(attn.state_dict(), strict=True)
    return ours


@settings(max_examples=60)
@given(config_dict=mla_config_dicts(), history=st.integers(0, 40), new=st.integers(1, 12),
       mode=st.sampled_from(["absorb", "naive"]), seed=st.integers(0, 2 ** 16))
def test_matches_transformers_per_request(config_dict, history, new, mode, seed):
    attn, rotary, config = hf_mla(config_dict, seed)
    ours = ours_from(attn, config_dict)
    g = torch.Generator().manual_seed(seed)
    dim = config_dict["hidden_size"]
    hx, nx = torch.rand(1, history, dim, generator=g), torch.rand(1, new, dim, generator=g)
    ref = hf_request(attn, rotary, config, hx, nx)
    cache = ours.new_cache(1, history + new + 3)
    with torch.no_grad():
        if history:
            ours(hx, cache, torch.tensor([0]), mode=mode)
        out = ours(nx, cache, torch.tensor([history]), mode=mode)
    err = relative_error(out, ref)
    WORST["rel_err"] = max(WORST["rel_err"], err)
    assert err < 1e-4


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    t = draw(st.integers(1, 8))
    seq_lens = draw(st.lists(st.integers(0, t), min_size=b, max_size=b))
    starts = draw(st.lists(st.integers(0, 20), min_size=b, max_size=b))
    return t, torch.tensor(starts), torch.tensor(seq_lens)


@settings(max_examples=40)
@given(config_dict=mla_config_dicts(), batch=batches(), mode=st.sampled_from(["absorb", "naive"]),
       seed=st.integers(0, 2 ** 16))
def test_batched_equals_per_request_and_padding_never_leaks(config_dict, batch, mode, seed):
    t, starts, lens = batch
    b, max_len = len(starts), 32
    ours = MLA(MLAConfig.from_dict(config_dict)).eval()
    from zoo_ref.qwen3_vl.tiny import randomize_
    randomize_(ours, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, config_dict["hidden_size"], generator=g)
    cache = ours.new_cache(b, max_len)
    cache.kv.copy_(torch.randn(cache.kv.shape, generator=g))  # random histories (and garbage beyond them)
    cache.pe.copy_(torch.randn(cache.pe.shape, generator=g))
    before_kv, before_pe = cache.kv.clone(), cache.pe.clone()
    x_poisoned = x.clone()
    for r in range(b):
        x_poisoned[r, lens[r]:] = 1e4  # padding content must not matter
    with torch.no_grad():
        out = ours(x_poisoned, cache, starts, lens, mode=mode)
        for r in range(b):
            single = ours.new_cache(1, max_len)
            single.kv.copy_(before_kv[r:r + 1])
            single.pe.copy_(before_pe[r:r + 1])
            n = int(lens[r])
            ref = ours(x[r:r + 1, :n], single, starts[r:r + 1], mode=mode) if n else torch.zeros(1, 0, x.shape[-1])
            assert relative_error(out[r, :n], ref[0]) < 1e-5 if n else True
            assert torch.all(out[r, n:] == 0)
            # same values as the per-request call (BLAS may round differently for another batch shape)
            torch.testing.assert_close(cache.kv[r], single.kv[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(cache.pe[r], single.pe[0], rtol=1e-5, atol=1e-6)
            lo, hi = int(starts[r]), int(starts[r]) + n  # only [start, start + n) may change
            untouched = torch.ones(max_len, dtype=torch.bool)
            untouched[lo:hi] = False
            assert torch.equal(cache.kv[r, untouched], before_kv[r, untouched])
            assert torch.equal(cache.pe[r, untouched], before_pe[r, untouched])


@settings(max_examples=25)
@given(config_dict=mla_config_dicts(), n=st.integers(2, 10), history=st.integers(0, 10),
       mode=st.sampled_from(["absorb", "naive"]), seed=st.integers(0, 2 ** 16))
def test_chained_decode_equals_one_prefill(config_dict, n, history, mode, seed):
    """Feeding each output back as the next input, one token at a time, equals one prefill of those inputs."""
    from zoo_ref.qwen3_vl.tiny import randomize_
    ours = randomize_(MLA(MLAConfig.from_dict(config_dict)).eval(), seed)
    g = torch.Generator().manual_seed(seed)
    dim = config_dict["hidden_size"]
    hist = torch.rand(1, history, dim, generator=g)
    a, b_ = ours.new_cache(1, 32), ours.new_cache(1, 32)
    with torch.no_grad():
        if history:
            ours(hist, a, torch.tensor([0]), mode=mode)
            ours(hist, b_, torch.tensor([0]), mode=mode)
        token, inputs, outs = torch.rand(1, 1, dim, generator=g), [], []
        for i in range(n):
            inputs.append(token)
            token = ours(token, a, torch.tensor([history + i]), mode=mode)
            outs.append(token)
            token = token / token.norm() * dim ** 0.5  # keep the fed-back input at a sane scale
        prefill = ours(torch.cat(inputs, 1), b_, torch.tensor([history]), mode=mode)
    assert relative_error(torch.cat(outs, 1), prefill) < 1e-5
    torch.testing.assert_close(a.kv, b_.kv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.pe, b_.pe, rtol=1e-5, atol=1e-6)


def test_modes_agree_in_bf16():
    from zoo_ref.qwen3_vl.tiny import randomize_
    d = {"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "q_lora_rank": 32,
         "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}
    ours = randomize_(MLA(MLAConfig.from_dict(d))).to(torch.bfloat16).eval()
    x = torch.rand(2, 5, 64, dtype=torch.bfloat16)
    starts, outs = torch.tensor([3, 0]), []
    for mode in ("naive", "absorb"):
        cache = ours.new_cache(2, 16)
        with torch.no_grad():
            outs.append(ours(x, cache, starts, mode=mode).float())
    assert relative_error(outs[1], outs[0]) < 2e-2


@pytest.fixture
def small():
    d = {"model_type": "deepseek_v3", "hidden_size": 32, "num_attention_heads": 2, "q_lora_rank": None,
         "kv_lora_rank": 8, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}
    from zoo_ref.qwen3_vl.tiny import randomize_
    return randomize_(MLA(MLAConfig.from_dict(d))).eval()


def test_overflow_is_refused_and_cache_intact(small):
    cache = small.new_cache(2, 8)
    cache.kv.normal_()
    before = cache.kv.clone()
    with pytest.raises(ValueError, match=r"cache overflow: start_pos \+ seq_lens = \[9, 3\] exceeds max_len 8"):
        small(torch.rand(2, 3, 32), cache, torch.tensor([6, 0]))
    assert torch.equal(cache.kv, before)


def test_bad_shapes_dtypes(small):
    cache = small.new_cache(1, 8)
    with pytest.raises(ValueError, match=r"x must be \[B, T, 32\], got \(1, 2, 31\)"):
        small(torch.rand(1, 2, 31), cache, torch.tensor([0]))
    with pytest.raises(ValueError, match="cache holds 1 rows but x has batch 2"):
        small(torch.rand(2, 2, 32), cache, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="start_pos must be a LongTensor of shape \\[1\\]"):
        small(torch.rand(1, 2, 32), cache, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="dtype mismatch: x torch.bfloat16"):
        small(torch.rand(1, 2, 32, dtype=torch.bfloat16), cache, torch.tensor([0]))
    with pytest.raises(ValueError, match="mode must be 'absorb' or 'naive'"):
        small(torch.rand(1, 2, 32), cache, torch.tensor([0]), mode="flash")


def test_config_errors_and_r1():
    import json
    from importlib.resources import files
    with pytest.raises(MLAConfigError, match="missing required field\\(s\\): kv_lora_rank"):
        MLAConfig.from_dict({"model_type": "deepseek_v3", "hidden_size": 8, "num_attention_heads": 1,
                             "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8})
    r1 = MLAConfig.from_dict(json.loads((files("zoo_ref") / "deepseek/configs/deepseek-r1.json").read_text()))
    from zoo_ref.deepseek import softmax_scale
    assert abs(softmax_scale(r1) - 0.135234) < 1e-5  # 192^-0.5 * (0.1 ln 40 + 1)^2, from the notes


def teardown_module(module):
    print(f"\nworst MLA relative error vs transformers: {WORST['rel_err']:.3e}")


def test_from_pretrained_loads_one_layer_of_a_sharded_deepseek_checkpoint(tmp_path):
    """A tiny DeepseekV3ForCausalLM saved sharded by transformers: layer 1's attention equals that layer's
    self_attn (weights and outputs); only the shards holding it are read; bad layers and FP8 are refused."""
    import json

    import transformers

    from bench.mla_peer import hf_deepseek_config
    from zoo_ref.checkpoint import CheckpointError
    from zoo_ref.qwen3_vl.tiny import randomize_
    d = {"model_type": "deepseek_v3", "hidden_size": 32, "num_attention_heads": 2, "q_lora_rank": 16,
         "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "vocab_size": 64,
         "intermediate_size": 48, "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
         "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
         "max_position_embeddings": 256,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.0,
                          "mscale_all_dim": 1.0}}
    config = hf_deepseek_config(d, num_hidden_layers=3)
    hf = randomize_(transformers.DeepseekV3ForCausalLM(config), seed=4).eval()
    hf.save_pretrained(tmp_path, max_shard_size="30KB")
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) > 2
    mla = MLA.from_pretrained(tmp_path, layer=1, dtype="float32")
    attn = hf.model.layers[1].self_attn
    for name, tensor in attn.state_dict().items():
        assert torch.equal(mla.state_dict()[name], tensor), name
    x = torch.rand(1, 5, 32, generator=torch.Generator().manual_seed(0))
    rotary = hf.model.rotary_emb
    ref = hf_request(attn, rotary, config, x[:, :0], x)
    cache = mla.new_cache(1, 8)
    with torch.no_grad():
        assert relative_error(mla(x, cache, torch.tensor([0])), ref) < 1e-4
    with pytest.raises(ValueError, match="layer must be an int in \\[0, 3\\)"):
        MLA.from_pretrained(tmp_path, layer=3)
    from safetensors.torch import save_file
    fp8 = tmp_path / "fp8"
    fp8.mkdir()
    (fp8 / "config.json").write_text((tmp_path / "config.json").read_text())
    tensors = {f"model.layers.0.self_attn.{k}": v.contiguous() for k, v in mla.state_dict().items()}
    tensors["model.layers.0.self_attn.q_a_proj.weight_scale_inv"] = torch.ones(1)
    save_file(tensors, str(fp8 / "model.safetensors"))
    with pytest.raises(CheckpointError, match="in FP8 .*dequantize the checkpoint to bf16 first"):
        MLA.from_pretrained(fp8, layer=0)


@given(t=st.integers(0, 6), max_len=st.integers(0, 12),
       rows=st.lists(st.tuples(st.integers(-2, 14), st.integers(-2, 8)), min_size=1, max_size=4))
def test_host_value_checks_equal_the_device_flags(t, max_len, rows):
    """The two forms of the value checks (plain Python for host lengths, torch ops for device lengths: the compiled
    step computes them in its graph) flag the same inputs."""
    starts, lens = [s for s, _ in rows], [n for _, n in rows]
    device = value_flags(t, max_len, torch.tensor(starts), torch.tensor(lens)).tolist()
    assert host_value_flags(t, max_len, starts, lens) == device
