"""Hugging Face checkpoint directories: config.json + model.safetensors, or sharded with an index."""
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from .errors import CheckpointError


def read_config(path) -> dict:
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"no config.json in {path}")
    return json.loads(cfg.read_text())


def weight_files(path) -> list[Path]:
    """The safetensors files of a checkpoint directory, in shard order."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are not there: {missing}")
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {path}")


def load_weights(module: torch.nn.Module, path, optional=(), dtype=None, device=None) -> None:
    """Copy a checkpoint's tensors into `module`'s parameters and persistent buffers.

    Every key and shape is checked from the safetensors headers before any data is copied, so a bad
    checkpoint raises one `CheckpointError` listing all problems and leaves the module untouched.
    `optional`: keys that may be absent (e.g. a tied lm_head.weight).
    """
    files = weight_files(path)
    expected = module.state_dict()
    found = {}  # key -> file
    shapes = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():
                found[key] = f
                shapes[key] = tuple(sf.get_slice(key).get_shape())
    missing = sorted(k for k in expected if k not in found and k not in optional)
    unexpected = sorted(k for k in found if k not in expected)
    misshaped = sorted(f"{k}: checkpoint {shapes[k]} vs model {tuple(expected[k].shape)}"
                       for k in found if k in expected and shapes[k] != tuple(expected[k].shape))
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {path} does not match {type(module).__name__}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for f in tqdm(files, desc="loading shards", unit="shard", disable=len(files) < 2):
            with safe_open(str(f), framework="pt", device="cpu") as sf:
                for key in sf.keys():
                    target = expected[key]
                    target.copy_(sf.get_tensor(key).to(dtype=target.dtype))
    if dtype is not None or device is not None:
        module.to(dtype=dtype, device=device)


@contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype or old)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_pretrained(cls, config, path, dtype=None, device=None, optional=()):
    """`cls(config)` built directly in dtype on device (no fp32 copy first), then the checkpoint's weights."""
    with torch.device(device or "cpu"), default_dtype(dtype):
        model = cls(config)
    load_weights(model, path, optional=optional)
    return model.eval()
