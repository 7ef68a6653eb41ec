"""Qwen3-VL preprocessing: zoo_ref's PIL processor (= transformers') vs zoo/preprocess.py on the CPU and, where
there is one, the GPU; 448 / 1024 / 1792 square images, 16 video frames of 640x360, and a batch of eight 1024x1024 JPEG
files (decoding included; zoo's images decoded by worker threads while the device works, or one at a time with
workers=1). Median ms of 5 runs after a warm-up; the GPU rows include the host->device copy of the uint8 pixels and end
with a synchronize.

  python bench/preprocess.py [--out DIR]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.preprocess import process_images as fast_images  # noqa: E402
from zoo.preprocess import process_video as fast_video  # noqa: E402
from zoo_ref.qwen3_vl.processor import process_images, process_video  # noqa: E402


def picture(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy())


def ms(fn, cuda):
    fn()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    cases = {f"image {s}x{s}": ([picture(s, s, s)], process_images, fast_images) for s in (448, 1024, 1792)}
    cases["video 16 frames 640x360"] = ([picture(360, 640, i) for i in range(16)], process_video, fast_video)
    files = tempfile.mkdtemp(prefix="zoo-bench-")
    jpegs = [Path(files, f"{i}.jpg") for i in range(8)]
    for i, path in enumerate(jpegs):
        picture(1024, 1024, 100 + i).save(path, quality=90)
    cases["8 JPEG files 1024x1024"] = (jpegs, process_images, fast_images)
    rows = {}
    for name, (inputs, old, new) in cases.items():
        row = {"zoo_ref PIL (CPU) ms": ms(lambda: old(inputs), False),
               "zoo torch CPU ms": ms(lambda: new(inputs), False)}
        if cuda:
            row["zoo torch GPU ms"] = ms(lambda: new(inputs, device="cuda"), True)
            if name.startswith("8 "):
                row["zoo torch GPU, one image at a time ms"] = ms(lambda: new(inputs, device="cuda", workers=1), True)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if cuda else "cpu", "rows": rows}
    Path(args.out, "preprocess.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
