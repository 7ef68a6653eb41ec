"""Qwen3-VL-2B benchmark (random weights, real config, bf16), peers in the same process.

  python bench/qwen3_vl.py                      # GPU: decode tok/s (batch 1, 8), TTFT, vision ms, bf16 check
  python bench/qwen3_vl.py --device cpu --tiny  # seconds, CI smoke

Methods: transformers eager, transformers static cache + compile (cache_implementation="static"),
zoo_ref (eager reference), zoo (zoo.compile). Decode tok/s = B * (N - 1) / (t(N new tokens) - t(1 new token)),
so prefill is excluded; TTFT = time of generate(max_new_tokens=1).
"""
import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
from bench.report import save_report  # noqa: E402
from zoo_ref.layers import relative_error  # noqa: E402
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration, process_images  # noqa: E402
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict  # noqa: E402

CONFIG_2B = Path(__file__).resolve().parents[1] / "zoo_ref/qwen3_vl/configs/qwen3-vl-2b-instruct.json"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=3):
    """Median wall time of fn() (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def image_prompt(config, size, text_len=16, device="cpu"):
    """A size x size random-content image prompt: ids with placeholders, pixel_values, grid."""
    g = torch.Generator().manual_seed(size)
    img = Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy())
    pixels, grid = process_images([img], min_pixels=size * size // 2, max_pixels=size * size)
    n = int(grid.prod()) // config.vision.spatial_merge_size ** 2
    ids = ([1] + [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
           + torch.randint(10, 1000, (text_len,), generator=g).tolist())
    return torch.tensor([ids], device=device), pixels.to(device), grid.to(device)


def hf_generate(hf, ids, n, static, pixels=None, grid=None):
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    if static:
        kw["cache_implementation"] = "static"
    if pixels is not None:
        kw.update(pixel_values=pixels, image_grid_thw=grid,
                  mm_token_type_ids=(ids == hf.config.image_token_id).int())
    return hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--skip", default="", help="comma list of methods to skip: hf_eager,hf_static,zoo_ref")
    p.add_argument("--out", default="bench/out")
    p.add_argument("--batches", default="1,8", help="decode batch sizes")
    p.add_argument("--parts", default="check,vision,decode,image_ttft,chat_ttft")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), torch.bfloat16
    skip = set(filter(None, args.skip.split(",")))
    cfg_dict = tiny_config_dict(vocab_size=1024) if args.tiny else json.loads(CONFIG_2B.read_text())
    config = Qwen3VLConfig.from_dict(cfg_dict)
    n_new = 8 if args.tiny else args.new_tokens
    prompt_len, sizes = (32, (64, 128)) if args.tiny else (128, (448, 1024))
    torch.manual_seed(0)
    hf_cfg = transformers.Qwen3VLConfig(**cfg_dict)
    with torch.device(device):
        hf = transformers.Qwen3VLForConditionalGeneration(hf_cfg).to(dtype).eval()
        ours = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    if args.tiny:
        randomize_(hf)
    ours.load_state_dict(hf.state_dict())
    t0 = time.perf_counter()
    parts = set(args.parts.split(","))
    # the second-question TTFT holds a sizes[1] image prompt (1024x1024: 1042 tokens) and two turns
    max_len = prompt_len + n_new + (1536 if "chat_ttft" in parts and not args.tiny else 320)
    compiled = zoo.compile(ours, max_batch_size=8, max_seq_len=max_len)
    results, notes = {}, {"setup_s": {"zoo.compile (patterns)": time.perf_counter() - t0}}
    print(f"weights ready; {sum(p.numel() for p in ours.parameters()) / 1e9:.2f}B params", flush=True)

    if "check" in parts:
        check_bf16(compiled, ours, config, sizes[0], device, notes)

    # ---- vision encoder (its feature cache off: every call encodes)
    features, compiled.encoder_cache = compiled.encoder_cache, None
    vision_cases = [(f"{s}x{s}", 1, s) for s in sizes] + ([] if args.tiny else [("1792x1792", 1, 1792)])
    vision_cases.append((f"8 images {sizes[0]}x{sizes[0]} in one call", 8, sizes[0]))
    for name, count, size in (vision_cases if "vision" in parts else ()):
        _, px, gr = image_prompt(config, size, device=device)
        px, gr = px.repeat(count, 1), gr.repeat(count, 1)
        with torch.no_grad():
            row = {"zoo": timed(lambda: compiled.encode_vision(px, gr), device, 10)}
            if "zoo_ref" not in skip and count == 1 and size <= 1024:
                row["zoo_ref"] = timed(lambda: ours.model.visual(px, gr), device, 10)
            row["hf_eager"] = timed(lambda: hf.model.visual(px, grid_thw=gr), device, 10)
        results[f"vision {name} (ms)"] = {k: v * 1e3 for k, v in row.items()}
        print(f"vision {name}: {results[f'vision {name} (ms)']}", flush=True)
    compiled.encoder_cache = features

    # ---- TTFT and decode
    for batch in ([int(b) for b in args.batches.split(",")] if "decode" in parts else ()):
        ids = torch.randint(10, 1000, (batch, prompt_len), device=device)
        runs = {"zoo": lambda n: compiled.generate(ids, max_new_tokens=n, eos_token_id=[])}
        if "zoo_ref" not in skip and batch == 1:
            runs["zoo_ref"] = lambda n: ours.generate(ids, max_new_tokens=n, eos_token_id=[])
        if "hf_eager" not in skip:
            runs["hf_eager"] = lambda n: hf_generate(hf, ids, n, static=False)
        if "hf_static" not in skip:
            runs["hf_static_compile"] = lambda n: hf_generate(hf, ids, n, static=True)
        row, ttft = {}, {}
        for name, run in runs.items():
            with torch.no_grad():
                n = n_new if name != "zoo_ref" else min(n_new, 32)
                t1 = timed(lambda: run(1), device)
                tn = timed(lambda: run(n), device)
            row[name] = batch * (n - 1) / max(tn - t1, 1e-9)
            ttft[name] = t1 * 1e3
            print(f"batch {batch} {name}: {row[name]:.1f} tok/s, TTFT {t1 * 1e3:.1f} ms", flush=True)
        results[f"decode tok/s, batch {batch}, prompt {prompt_len}"] = row
        if batch == 1:
            results[f"TTFT {prompt_len}-token prompt (ms)"] = ttft
    if "image_ttft" in parts:
        image_ttft(compiled, hf, config, sizes[0], device, skip, results)
    if "chat_ttft" in parts:
        chat_ttft(compiled, config, sizes[1], device, results)
    report(results, notes, compiled, args, device)


def image_ttft(compiled, hf, config, size, device, skip, results):
    ids, px, gr = image_prompt(config, size, device=device)
    row = {"zoo": timed(lambda: compiled.generate(ids, pixel_values=px, image_grid_thw=gr, max_new_tokens=1,
                                                  eos_token_id=[]), device)}
    if "hf_eager" not in skip:
        row["hf_eager"] = timed(lambda: hf_generate(hf, ids, 1, False, px, gr), device)
    results[f"TTFT image prompt {size}x{size} (ms)"] = {k: v * 1e3 for k, v in row.items()}


def chat_ttft(compiled, config, size, device, results, repeat=3):
    """A second question about the same image: TTFT of the follow-up turn (first turn's prompt + its 16-token
    answer + 16 new tokens) with both caches (the conversation's K/V and the image's features), with the image
    features only, and with neither. Each timed turn runs right after the first turn (what the prefix cache holds)."""
    ids, px, gr = image_prompt(config, size, device=device)
    question = torch.randint(10, 1000, (1, 16), device=device)

    def follow_up_ms(keep_prefix, keep_features):
        times = []
        for _ in range(repeat + 1):  # the first round compiles
            answer = compiled.generate(ids, pixel_values=px, image_grid_thw=gr, max_new_tokens=16, eos_token_id=[])
            turn = torch.cat([ids, answer, question], 1)
            if not keep_prefix:
                compiled.prefix.forget()
            features, compiled.encoder_cache = compiled.encoder_cache, (compiled.encoder_cache if keep_features
                                                                        else None)
            sync(device)
            t0 = time.perf_counter()
            compiled.generate(turn, pixel_values=px, image_grid_thw=gr, max_new_tokens=1, eos_token_id=[])
            sync(device)
            times.append(time.perf_counter() - t0)
            compiled.encoder_cache = features
        return 1e3 * sorted(times[1:])[len(times[1:]) // 2]
    row = {"zoo, both caches": follow_up_ms(True, True), "zoo, image features cached": follow_up_ms(False, True),
           "zoo, no caches": follow_up_ms(False, False)}
    results[f"TTFT second question about a {size}x{size} image (ms)"] = row
    print(f"chat TTFT {size}: {row} (prefix cache {compiled.prefix.stats})", flush=True)


def check_bf16(compiled, ours, config, size, device, notes):
    """32 decode steps of zoo (bf16), then the same tokens through zoo_ref's no-cache forward in bf16 and in
    fp32: per-step logits errors of zoo and of zoo_ref itself against fp32, and zoo against zoo_ref.

    The bf16 noise floor: zoo_ref in bf16 once more with one rounding taken out (attention scores and
    probabilities in fp32, as fused kernels keep them), against zoo_ref bf16. Two bf16 evaluations of the
    same math differ by about this much at these random weights, whoever computes them."""
    import copy
    from unittest import mock

    import zoo_ref.decoder as text
    import zoo_ref.qwen3_vl.vision as vision
    ids, pixels, grid = image_prompt(config, size, device=device)
    with torch.no_grad():
        tokens, logits = compiled.generate(ids, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=32,
                                           eos_token_id=[], return_logits=True)
        seq = torch.cat([ids, tokens], 1)
        at = slice(ids.shape[1] - 1, ids.shape[1] - 1 + tokens.shape[1])
        ref16 = ours(seq, pixel_values=pixels, image_grid_thw=grid)[:, at].float()

        def attention_fp32(q, k, v, mask, scale, _attention=text.attention):
            return _attention(q.float(), k.float(), v.float(), mask, scale).to(q.dtype)
        with mock.patch.object(text, "attention", attention_fp32), mock.patch.object(vision, "attention",
                                                                                      attention_fp32):
            ref16_fp32_attention = ours(seq, pixel_values=pixels, image_grid_thw=grid)[:, at].float()
        ref32 = copy.deepcopy(ours).float()(seq, pixel_values=pixels.float(), image_grid_thw=grid)[:, at]
    steps = range(tokens.shape[1])
    err = {name: max(relative_error(a[:, i].float(), b[:, i]) for i in steps)
           for name, a, b in (("zoo bf16 vs zoo_ref bf16", logits, ref16), ("zoo bf16 vs fp32", logits, ref32),
                              ("zoo_ref bf16 vs fp32", ref16, ref32),
                              ("noise floor: zoo_ref bf16 with fp32 attention vs zoo_ref bf16",
                               ref16_fp32_attention, ref16))}
    for name, e in err.items():
        notes[f"max per-step logits rel err over 32 decode steps (image prompt): {name}"] = e
    print(f"bf16 check: {err}", flush=True)


def report(results, notes, compiled, args, device):
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    head = (f"Qwen3-VL {'tiny' if args.tiny else '2B'} (random weights), bf16, {date.today()}, device {gpu}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}")
    lines = [head, ""]
    for metric, row in results.items():
        base = row.get("hf_static_compile") or row.get("hf_eager")
        ratio = ""
        if base and "zoo" in row:
            ratio = f" (zoo vs {'hf_static_compile' if 'hf_static_compile' in row else 'hf_eager'}: " + \
                    (f"{row['zoo'] / base:.2f}x)" if "tok/s" in metric else f"{base / row['zoo']:.2f}x faster)")
        lines.append(f"- {metric}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()) + ratio)
    lines += [f"- {k}: {v:.4g}" for k, v in notes.items() if not isinstance(v, dict)]
    lines += ["", "zoo.explain:", str(zoo.explain(compiled))]
    save_report(args.out, "qwen3_vl", "\n".join(lines), {"header": head, "results": results, "notes": notes})


if __name__ == "__main__":
    main()
