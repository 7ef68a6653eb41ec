"""Cost follows work: Qwen3-VL-2B text path (random weights, real config, bf16) at long contexts, peers in one run.

  python bench/long_context.py                        # H100: the issue-9 rows
  python bench/long_context.py --device cpu --tiny    # CPU: max_seq_len 16384 vs 256 on a tiny model

Rows: TTFT of a short prompt and decode tok/s with a small and a large static cache (same work: the times should
match); prefill (TTFT) of 8192 and 30,000 tokens beside transformers eager (SDPA); decode tok/s at 8192 and
30,000 tokens of context. Floors: prefill FLOPs (2 * non-embedding params * T + causal attention 2 * T^2 * H * D
per layer) at the measured bf16 matmul rate; decode bytes (weights once, plus the K/V of the context) at the
measured copy rate. Decode tok/s = (N - 1) / (t(N new tokens) - t(1 new token)).
"""
import argparse
import copy
import functools
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
from bench.qwen3_vl import CONFIG_2B, hf_generate, sync, timed  # noqa: E402
from bench.report import save_report  # noqa: E402
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict  # noqa: E402


def rates(device):
    """(bf16 matmul FLOP/s, copy bytes/s) measured here; None on the CPU."""
    if device.type != "cuda":
        return None, None
    import triton
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    flops = 2 * 8192 ** 3 / (triton.testing.do_bench(lambda: a @ a, return_mode="median") * 1e-3)
    x = torch.empty(1 << 28, device=device, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    bandwidth = 4 * x.numel() / (triton.testing.do_bench(lambda: y.copy_(x), return_mode="median") * 1e-3)
    return flops, bandwidth


def floors(model, flops, bandwidth):
    c = model.config.text
    params = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n and "embed_tokens" not in n)
    weight_bytes = 2 * sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)  # tied lm_head once

    def prefill_ms(t):
        return (2 * params * t + c.num_hidden_layers * 2 * t * t * c.num_attention_heads * c.head_dim) / flops * 1e3

    def decode_tok_s(context):
        kv = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2 * context
        return bandwidth / (weight_bytes + kv)
    return prefill_ms, decode_tok_s


def fresh_generate(compiled, ids, n):
    """generate with a whole prefill: the same prompt again would otherwise reuse the conversation prefix that the
    last call left in the cache (zoo/prefix.py) and prefill only its last token."""
    compiled.prefix.forget()
    return compiled.generate(ids, max_new_tokens=n, eos_token_id=[])


def decode_rate(run, n, device, repeat=3):
    t1, tn = timed(lambda: run(1), device, repeat), timed(lambda: run(n), device, repeat)
    return (n - 1) / max(tn - t1, 1e-9), t1


def step_ms(compiled, ids, device, n=50):
    """One decode step alone at len(ids) tokens of context: the batch-1 decode graph replayed (each replay appends
    a token, so n replays run at context t .. t + n). No host work, no prefill in the timing."""
    fresh_generate(compiled, ids, 2)
    graph = compiled.graphs.graphs[("decode", 1, False)][0]  # greedy, batch bucket 1
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        graph.replay()
    sync(device)
    return (time.perf_counter() - t0) / n * 1e3


def profile_ttft(fn, size, device):
    from torch.profiler import ProfilerActivity, profile
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)
    print(f"max_seq_len {size}: one TTFT call: device busy {gpu_us / 1e3:.2f} ms; top host ops:\n"
          + events.table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60), flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", default="bench/out")
    p.add_argument("--parts", default="buffers,long")
    args = p.parse_args(argv)
    device, parts = torch.device(args.device), set(args.parts.split(","))
    cfg = tiny_config_dict(vocab_size=1024) if args.tiny else json.loads(CONFIG_2B.read_text())
    small, big, short = (256, 16384, 32) if args.tiny else (1024, 32768, 128)
    long_prompts = (2048, 8000) if args.tiny else (8192, 30000)
    n_new = 16 if args.tiny else 64
    torch.manual_seed(0)
    with torch.device(device):
        hf = transformers.Qwen3VLForConditionalGeneration(transformers.Qwen3VLConfig(**cfg)).to(torch.bfloat16).eval()
        ours = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(cfg)).to(torch.bfloat16).eval()
    if args.tiny:
        randomize_(hf)
    ours.load_state_dict(hf.state_dict())
    flops, bandwidth = rates(device)
    prefill_floor, decode_floor = floors(ours, flops, bandwidth) if flops else (None, None)
    results, notes = {}, {"measured bf16 matmul TFLOP/s": flops and flops / 1e12,
                          "measured copy GB/s": bandwidth and bandwidth / 1e9}
    compiled = {}
    for size in (small, big) if "buffers" in parts else (big,):
        start = time.perf_counter()
        # a copy per compile: zoo.compile packs the model's q/k/v and gate/up weights (a later compile of the same
        # model would repack them, and the first compiled model refuses to run on replaced weights)
        model = ours if size == big else copy.deepcopy(ours)
        compiled[size] = zoo.compile(model, max_batch_size=1, max_seq_len=size)
        ids = torch.randint(10, 1000, (1, short), device=device)
        compiled[size].generate(ids, max_new_tokens=2, eos_token_id=[])
        sync(device)
        notes[f"cold start max_seq_len {size}: zoo.compile + first generate s"] = time.perf_counter() - start
        print(notes, flush=True)
    with torch.no_grad():
        if "buffers" in parts:
            ids = torch.randint(10, 1000, (1, short), device=device)
            for size, c in compiled.items():
                run = functools.partial(fresh_generate, c, ids)
                rate, ttft = decode_rate(run, n_new, device)
                ttft = timed(lambda run=run: run(1), device, 10)
                results[f"max_seq_len {size}: TTFT {short}-token prompt (ms)"] = {"zoo": ttft * 1e3}
                results[f"max_seq_len {size}: decode tok/s, prompt {short}"] = {"zoo": rate}
                if "profile" in parts:  # where a short prompt's TTFT goes (host vs device), per buffer size
                    profile_ttft(lambda run=run: run(1), size, device)
                if args.tiny:  # one more graph to compile: CPU only
                    results[f"max_seq_len {size}: forward {short} tokens (ms)"] = {
                        "zoo": timed(lambda c=c: c(ids), device) * 1e3}
                print(results, flush=True)
        if "long" in parts:
            c = compiled[big]
            for t in long_prompts:
                ids = torch.randint(10, 1000, (1, t), device=device)
                # 7 repeats: an 8192-token TTFT varies by ~15% between calls on the H200 (host side; median)
                row = {"zoo": timed(lambda: fresh_generate(c, ids, 1), device, 7) * 1e3,
                       "hf_eager": timed(lambda: hf_generate(hf, ids, 1, static=False), device) * 1e3}
                if prefill_floor:
                    row["floor"] = prefill_floor(t)
                    row["zoo % of floor"] = 100 * row["floor"] / row["zoo"]
                results[f"prefill {t} tokens, TTFT (ms)"] = row
                # a long prefill in both timings: more steps and repeats, or its run-to-run noise swamps the decode
                rate, _ = decode_rate(functools.partial(fresh_generate, c, ids), n_new, device, repeat=7)
                row = {"zoo": rate}
                if c.cuda_graphs:
                    row["zoo step replay (ms)"] = step_ms(c, ids, device)
                if decode_floor:
                    row["floor"] = decode_floor(t)
                    row["zoo % of floor"] = 100 * rate / row["floor"]
                results[f"decode tok/s at {t} context"] = row
                print(results, flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (f"Qwen3-VL {'tiny' if args.tiny else '2B'} text path (random weights), bf16, {date.today()}, {gpu}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
    lines = [head, ""] + [f"- {m}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()) for m, row in results.items()]
    lines += [f"- {k}: {v:.4g}" for k, v in notes.items() if v is not None]
    lines += ["", "zoo.explain (largest buffer):", str(zoo.explain(compiled[big]))]
    save_report(args.out, "long_context" + ("_tiny" if args.tiny else ""), "\n".join(lines),
                {"header": head, "results": results, "notes": notes})


if __name__ == "__main__":
    main()
