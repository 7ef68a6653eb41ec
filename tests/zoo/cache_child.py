"""One fresh process of the compile-cache test (tests/zoo/test_compile_cache.py): build the tiny Qwen3-VL, compile
it with the given cache dir and passes, generate from an image prompt; print one JSON line with the seconds from
zoo.compile to the first result, the tokens and logits, what zoo.explain reports, and torch's own counters of
Inductor / AOTAutograd cache hits and misses (what the process compiled, independent of zoo's bookkeeping).

    python -m tests.zoo.cache_child CACHE_DIR PASSES [EXTRA_TEXT_TOKENS [EXPORT_FILE [IMPORT_FILE]]]"""
import json
import sys
import time

import torch
from PIL import Image

import zoo
from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration, process_images
from zoo_ref.qwen3_vl.tiny import randomize_, tiny_config_dict

CONFIG = tiny_config_dict(layers=2, v_depth=2, deepstack=(0, 1), kv_heads=2, heads=4)


def main(cache_dir, passes, extra_text=0, export=None, install=None):
    torch.manual_seed(0)
    model = randomize_(Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(CONFIG)), seed=5).eval()
    g = torch.Generator().manual_seed(1)
    image = Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).byte().numpy())
    pixels, grid = process_images([image], min_pixels=32 * 32, max_pixels=64 * 64)
    n = int(grid.prod()) // CONFIG["vision_config"]["spatial_merge_size"] ** 2
    c = CONFIG
    ids = torch.tensor([[1, c["vision_start_token_id"]] + [c["image_token_id"]] * n + [c["vision_end_token_id"], 7, 8]
                        + [9] * extra_text])
    start = time.perf_counter()
    if install:
        zoo.import_cache(install, cache_dir)
    compiled = zoo.compile(model, max_batch_size=1, max_seq_len=64, cache_dir=cache_dir, passes=tuple(passes))
    tokens, logits = compiled.generate(ids, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=4,
                                       eos_token_id=[], return_logits=True)
    seconds = time.perf_counter() - start
    report = zoo.explain(compiled)
    caches = {f"{group}.{k}": v for group in ("inductor", "aot_autograd")
              for k, v in torch._dynamo.utils.counters[group].items() if "cache" in k}
    if export:
        zoo.export_cache(export, cache_dir)
    print(json.dumps({"seconds": seconds, "tokens": tokens.tolist(), "logits": logits.flatten().tolist(),
                      "per_graph": report.per_graph, "sites": {k: dict(v) for k, v in report.sites.items()},
                      "from_cache": report.from_cache, "torch_caches": caches,
                      "patterns_traced": sum(len(r.patterns) for r in compiled.compiler.manager.replacements)}))


if __name__ == "__main__":
    cache, passes, extra, export, install = (sys.argv[1:] + [""] * 5)[:5]
    main(cache, passes.split(","), int(extra or 0), export or None, install or None)
