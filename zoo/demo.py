"""`python -m zoo demo`: a tiny Qwen3-VL checkpoint end to end, offline (image + text -> tokens)."""
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from zoo_ref.qwen3_vl import Qwen3VLForConditionalGeneration, build_inputs, load_tokenizer
from zoo_ref.qwen3_vl.tiny import make_tiny_checkpoint


def test_image(width=200, height=120) -> Image.Image:
    img = Image.new("RGB", (width, height), (235, 235, 220))
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 90, 70), fill=(200, 40, 40))
    draw.ellipse((110, 30, 190, 110), fill=(40, 90, 200))
    draw.line((0, height - 1, width - 1, 0), fill=(20, 20, 20), width=3)
    return img


def main(out_dir=None, max_new_tokens=16):
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(out_dir or tmp) / "tiny-qwen3-vl"
        make_tiny_checkpoint(path, seed=0, max_shard_bytes=200_000)
        files = sorted(p.name for p in path.iterdir())
        print(f"1. wrote a tiny Qwen3-VL checkpoint (random weights, real key names) to {path}:\n   {files}")
        model = Qwen3VLForConditionalGeneration.from_pretrained(path)
        tok = load_tokenizer(path)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"2. loaded it: {n_params:,} parameters, tokenizer {type(tok).__name__} ({len(tok)} tokens)")
        image = test_image()
        inputs = build_inputs(tok, "What is in this picture?", images=[image], min_pixels=32 * 32,
                              max_pixels=128 * 128)
        grid = inputs["image_grid_thw"][0].tolist()
        n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        print(f"3. drew a {image.width}x{image.height} test image -> pixel_values "
              f"{tuple(inputs['pixel_values'].shape)}, grid (t, h, w) = {tuple(grid)}, {n_image_tokens} image tokens "
              f"in a {inputs['input_ids'].shape[1]}-token prompt")
        start = time.perf_counter()
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=[])
        elapsed = time.perf_counter() - start
        print(f"4. generated {tokens.shape[1]} tokens greedily in {elapsed * 1000:.0f} ms: {tokens[0].tolist()}")
        print(f"   decoded (random weights, so gibberish): {tok.decode(tokens[0])!r}")
        logits = model(torch.cat([inputs["input_ids"], tokens], 1), pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"])
        t = inputs["input_ids"].shape[1]
        same = bool((logits[0, t - 1:-1].argmax(-1) == tokens[0]).all())
        print(f"5. check: every generated token is the no-cache forward's argmax: {same}")
        return same


if __name__ == "__main__":
    main()
