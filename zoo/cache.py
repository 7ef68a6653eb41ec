"""Compiled artifacts reused across processes: Inductor's FX graph cache and the AOTAutograd cache in one zoo
directory, and what zoo's passes did to each graph stored beside them, so `zoo.explain` reads the same on a
cache hit (where the passes do not run) as on a cold compile.

The directory: `zoo.compile(..., cache_dir=...)`, else $ZOO_CACHE_DIR, else $XDG_CACHE_HOME/zoo (~/.cache/zoo);
`cache_dir=False` turns caching off. Inductor reads its cache location from $TORCHINDUCTOR_CACHE_DIR whenever it
uses it, so zoo sets that variable only around its own compiles and restores it after. The pass manager's uuid()
(pass files, the zoo_ref sources the patterns come from, enabled passes, registered layouts) is part of every
graph's key: a change to any of them misses.
"""
import hashlib
import json
import os
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch

from zoo_ref.errors import InputError, InputTypeError


def resolve_cache_dir(cache_dir) -> Path | None:
    """None -> $ZOO_CACHE_DIR or the per-user default; False -> no caching; a path -> that directory."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache_dir = os.environ.get("ZOO_CACHE_DIR") or os.path.join(base, "zoo")
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise InputTypeError(f"cache_dir must be a path, None (the default directory) or False (no cache), got "
                             f"{type(cache_dir).__name__}")
    path = Path(cache_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def inductor_cache_dir(path: Path | None):
    """Inductor's (and its Triton kernels') cache in `path` for the duration of a compile."""
    if path is None:
        yield
        return
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def graph_key(gm: torch.fx.GraphModule, uuid: str) -> str:
    """What identifies a graph for its pass record: the passes' uuid, Dynamo's graph code and its inputs as Dynamo
    traced them (dtype and shape, a dynamic size as its symbol: one dynamic graph serves every length)."""
    h = hashlib.sha256(uuid.encode())
    h.update(gm.code.encode())
    for node in gm.graph.find_nodes(op="placeholder"):
        x = node.meta.get("example_value")
        h.update(repr((x.dtype, tuple(map(str, x.shape))) if isinstance(x, torch.Tensor) else str(x)).encode())
    return h.hexdigest()[:32]


class PassRecords:
    """One JSON file per graph key: the pass counts and per-layer sites of the compile that produced it."""

    def __init__(self, path: Path):
        self.dir = path / "zoo_passes"
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, key: str, counts: dict, sites: Counter):
        record = {"counts": counts, "sites": [[name, site, n] for (name, site), n in sites.items()]}
        tmp = self.dir / f"{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.dir / f"{key}.json")  # atomic: a concurrent reader sees all of it or nothing

    def load(self, key: str):
        """-> (counts, sites Counter) or None."""
        f = self.dir / f"{key}.json"
        if not f.exists():
            return None
        record = json.loads(f.read_text())
        return record["counts"], Counter({(name, site): n for name, site, n in record["sites"]})


def _existing_dir(cache_dir) -> Path:
    """The directory export/import works on: cache_dir, or the default one when it is None or False."""
    return resolve_cache_dir(None if cache_dir is False else cache_dir)


def export_cache(path, cache_dir=None):
    """Write what this process compiled (torch's cache artifacts: FX graphs, AOTAutograd entries, Triton kernels) and
    zoo's pass records into one file that `import_cache` installs elsewhere (`python -m zoo warmup` builds one)."""
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        raise InputError("nothing was compiled in this process: compile and run the model before exporting")
    data, _ = artifacts
    records = PassRecords(_existing_dir(cache_dir))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("torch_cache_artifacts.bin", data)
        for f in sorted(records.dir.glob("*.json")):
            z.write(f, f"zoo_passes/{f.name}")
    return Path(path)


def import_cache(path, cache_dir=None) -> Path:
    """Install an `export_cache` file into the cache directory (default: $ZOO_CACHE_DIR or ~/.cache/zoo): the next
    zoo.compile of the same model and settings loads its graphs instead of compiling them."""
    target = _existing_dir(cache_dir)
    records = PassRecords(target)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{path} is not a zoo cache export: {e}") from None
    with z:
        if "torch_cache_artifacts.bin" not in z.namelist():
            raise InputError(f"{path} is not a zoo cache export (no torch_cache_artifacts.bin)")
        with inductor_cache_dir(target):
            torch.compiler.load_cache_artifacts(z.read("torch_cache_artifacts.bin"))
        for name in z.namelist():
            if name.startswith("zoo_passes/") and name.endswith(".json"):
                (records.dir / Path(name).name).write_bytes(z.read(name))
    return target
