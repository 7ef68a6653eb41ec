"""Cold and warm start: seconds from `zoo.compile` to the first generated token, in two fresh processes that share
one (initially empty) compile cache directory, and where the cold seconds go (zoo.explain's per-graph compile
seconds in Inductor or its cache, and the seconds of Dynamo tracing around them; the rest is zoo.compile's pattern
registration, CUDA-graph capture and the runs themselves).

  python bench/cold_start.py [--models qwen3_vl,mla] [--out DIR]

qwen3_vl: Qwen3-VL-2B (the shipped real config, random weights, bf16), a 448x448 image prompt; first token = a
generate of one token (vision encoder + prefill graphs), then decode-ready = the same prompt again for 5 tokens (the
decode graph, and the prefix-extension graph: the second call reuses the first one's prompt).
mla: one DeepSeek-R1 MLA layer (random weights, bf16), a 128-token prefill then a decode step over a 1024-slot cache.
The weights are built before the clock starts (loading is not compiling).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model, cache_dir):
    t_process = time.perf_counter()
    import torch
    sys.path.insert(0, str(ROOT))
    import zoo
    from zoo_ref.deepseek import MLA, MLAConfig
    from zoo_ref.qwen3_vl import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    torch.manual_seed(0)
    out = {"imports s": time.perf_counter() - t_process}
    if model == "qwen3_vl":
        from bench.qwen3_vl import CONFIG_2B, image_prompt
        config = Qwen3VLConfig.from_dict(json.loads(CONFIG_2B.read_text()))
        ids, px, grid = image_prompt(config, 448, device="cuda")
        with torch.device("cuda"):
            net = Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    else:
        from bench.mla import R1
        config = MLAConfig.from_dict(json.loads(R1.read_text()))
        with torch.device("cuda"):
            net = MLA(config).to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    start = time.perf_counter()
    if model == "qwen3_vl":
        compiled = zoo.compile(net, max_batch_size=1, max_seq_len=1024, cache_dir=cache_dir)
        out["zoo.compile s"] = time.perf_counter() - start
        compiled.generate(ids, pixel_values=px, image_grid_thw=grid, max_new_tokens=1, eos_token_id=[])
        torch.cuda.synchronize()
        out["first token s"] = time.perf_counter() - start
        compiled.generate(ids, pixel_values=px, image_grid_thw=grid, max_new_tokens=5, eos_token_id=[])
    else:
        compiled = zoo.compile(net, cache_dir=cache_dir)
        out["zoo.compile s"] = time.perf_counter() - start
        cache = compiled.new_cache(1, 1024)
        x = torch.randn(1, 128, config.hidden_size, device="cuda", dtype=torch.bfloat16)
        compiled(x, cache, torch.tensor([0]))
        torch.cuda.synchronize()
        out["first token s"] = time.perf_counter() - start
        compiled(x[:, :1], cache, torch.tensor([128]))
    torch.cuda.synchronize()
    out["decode ready s"] = time.perf_counter() - start
    report = zoo.explain(compiled)
    out["compile s per function"] = dict(report.compile_seconds)
    out["tracing s per function"] = dict(report.trace_seconds)
    out["from cache"] = dict(report.from_cache)
    out["graphs"] = dict(report.graphs)
    print("RESULT " + json.dumps(out), flush=True)


def child_env(cache_root):
    """The children's environment: where Python cannot write bytecode next to the sources (a read-only
    site-packages, as on the device machines), a bytecode cache both processes share, as an installed environment
    has (without it every process compiles ~2,300 modules' sources again: ~8 s of a warm start measured there)."""
    env = dict(os.environ)
    import torch
    if "PYTHONPYCACHEPREFIX" not in env and not os.access(Path(torch.__file__).parent, os.W_OK):
        env["PYTHONPYCACHEPREFIX"] = str(Path(cache_root or tempfile.gettempdir(), "zoo-cold-pycache"))
    return env


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="qwen3_vl,mla")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--child", nargs=2, metavar=("MODEL", "CACHE_DIR"))
    p.add_argument("--cache-root", default=None, help="where the cache directories are made (default: the temp dir)")
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    results = {}
    for model in args.models.split(","):
        cache_dir = tempfile.mkdtemp(prefix=f"zoo-cold-{model}-", dir=args.cache_root)
        for run in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", model, cache_dir], capture_output=True,
                                  text=True, cwd=ROOT, env=child_env(args.cache_root))
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
                raise SystemExit(f"{model} {run}: child failed ({proc.returncode})")
            results[f"{model} {run}"] = {**json.loads(lines[-1][7:]), "process wall s": time.perf_counter() - t0}
            print(model, run, json.dumps(results[f"{model} {run}"]), flush=True)
    Path(args.out, "cold_start.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
