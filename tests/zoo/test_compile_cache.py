"""Compiled graphs persist across processes (zoo/cache.py): a second fresh process sharing the cache directory
loads them and compiles nothing (torch's own cache counters say so), gives bit-identical results and the same
zoo.explain; a change to the passes (part of every graph's key) misses. How much faster a warm start is, is measured
by bench/cold_start.py, not asserted here: wall time on a shared CI machine is not a test."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compile_passes import ZooPassManager
from compile_passes import manager as manager_module

ROOT = Path(__file__).resolve().parents[2]
ALL = "attention,rope,linears"


def run_child(cache_dir, passes=ALL, extra_text=0, export="", install=""):
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "tests.zoo.cache_child", str(cache_dir), passes, str(extra_text),
                          str(export), str(install)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("zoo-cache")
    export = tmp_path_factory.mktemp("export") / "tiny.zoocache"
    return cache, run_child(cache, export=export), run_child(cache), export


def test_second_process_loads_the_graphs(two_runs):
    _, cold, warm, _ = two_runs
    assert not any(cold["from_cache"].values()) and all(warm["from_cache"].values()), (cold, warm)
    # torch's counters, not zoo's: the cold process compiled (and stored) every graph, the warm one compiled none
    graphs = len(cold["from_cache"])
    assert cold["torch_caches"].get("inductor.fxgraph_cache_miss", 0) >= graphs, cold["torch_caches"]
    assert cold["torch_caches"].get("inductor.fxgraph_cache_hit", 0) == 0, cold["torch_caches"]
    assert warm["torch_caches"].get("inductor.fxgraph_cache_hit", 0) >= graphs, warm["torch_caches"]
    for counter in ("inductor.fxgraph_cache_miss", "inductor.fxgraph_cache_bypass",
                    "aot_autograd.autograd_cache_miss", "aot_autograd.autograd_cache_bypass"):
        assert warm["torch_caches"].get(counter, 0) == 0, (counter, warm["torch_caches"])
    # the passes' patterns are traced only when a graph is compiled: never on a warm start
    assert cold["patterns_traced"] > 0 and warm["patterns_traced"] == 0, (cold, warm)


def test_results_and_explain_identical_on_a_hit(two_runs):
    _, cold, warm, _ = two_runs
    assert warm["tokens"] == cold["tokens"] and warm["logits"] == cold["logits"]
    assert warm["per_graph"] == cold["per_graph"] and warm["sites"] == cold["sites"]
    assert {name for name, _ in warm["per_graph"]} >= {"vision", "prefill[b=1]", "decode[b=1]"}


def test_a_longer_prompt_hits_the_same_dynamic_graphs(two_runs):
    cache, cold, _, _ = two_runs
    longer = run_child(cache, ALL, extra_text=9)
    assert all(longer["from_cache"].values()), longer["from_cache"]
    assert longer["per_graph"] == cold["per_graph"]


def test_other_passes_miss_the_cache(two_runs):
    cache, cold, _, _ = two_runs
    other = run_child(cache, "attention,rope")
    assert not any(other["from_cache"].values()), other["from_cache"]
    assert all(counts.get("linears", 0) == 0 for _, counts in other["per_graph"])
    assert other["tokens"] == cold["tokens"]


def test_an_exported_cache_installs_in_an_empty_directory(two_runs, tmp_path):
    """`zoo.export_cache` after the cold run, `zoo.import_cache` into a fresh directory in a fresh process: the
    graphs load from it (what `python -m zoo warmup --export` ships)."""
    _, cold, _, export = two_runs
    shipped = run_child(tmp_path / "empty", install=export)
    assert all(shipped["from_cache"].values()), shipped["from_cache"]
    assert shipped["tokens"] == cold["tokens"] and shipped["per_graph"] == cold["per_graph"]


def test_uuid_covers_the_reference_sources(tmp_path, monkeypatch):
    """The graphs' key follows the contents of every file the passes read (zoo_ref's functions the patterns come
    from): the same contents elsewhere give the same key, one changed line another."""
    def uuid_of(folder, change=False):
        copies = []
        for i, f in enumerate(manager_module._FILES):
            text = Path(f).read_text() + ("\n# a change\n" if change and f.endswith("layers.py") else "")
            copy = tmp_path / folder / f"{i}_{Path(f).name}"
            copy.parent.mkdir(exist_ok=True)
            copy.write_text(text)
            copies.append(str(copy))
        monkeypatch.setattr(manager_module, "_FILES", tuple(copies))
        return ZooPassManager(("attention", "rope")).uuid()
    assert uuid_of("a") == uuid_of("b") != uuid_of("c", change=True)
