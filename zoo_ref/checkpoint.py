"""Hugging Face checkpoint directories: config.json + model.safetensors, or sharded with an index."""
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .errors import CheckpointError, InputError


def read_config(path) -> dict:
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"no config.json in {path}")
    try:
        d = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{cfg} must hold a JSON object, got {type(d).__name__}")
    return d


def weight_files(path, prefix: str = "") -> list[Path]:
    """The safetensors files of a checkpoint directory holding keys that start with `prefix`, in shard order.
    Like transformers, a single model.safetensors wins over a sharded index."""
    path = Path(path)
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a valid index: {e}") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no weight_map (key -> shard file)")
        names = sorted({f for k, f in weight_map.items() if k.startswith(prefix)})
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are not there: {missing}")
        return [path / n for n in names]
    raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {path}")


def _headers(files, prefix):
    """{key without prefix: (file, shape)} from the safetensors headers; duplicate keys and unreadable files raise."""
    found, duplicates = {}, []
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    if key.startswith(prefix):
                        name = key[len(prefix):]
                        if name in found:
                            duplicates.append(f"{key} ({found[name][0].name} and {f.name})")
                        found[name] = (f, tuple(sf.get_slice(key).get_shape()))
        except Exception as e:  # safetensors raises its own error types, without the file's name
            raise CheckpointError(f"cannot read {f}: {type(e).__name__}: {e}") from None
    if duplicates:
        raise CheckpointError(f"the same tensor is stored in two shards: {', '.join(duplicates)}")
    return found


def load_weights(module: torch.nn.Module, path, optional=(), dtype=None, device=None, prefix: str = "") -> None:
    """Copy a checkpoint's tensors into `module`'s parameters and persistent buffers.

    Every key and shape is checked from the safetensors headers before any data is copied, so a bad
    checkpoint raises one `CheckpointError` listing all problems and leaves the module untouched.
    `optional`: keys that may be absent (e.g. a tied lm_head.weight). `prefix`: load only the checkpoint's keys
    under it (e.g. one layer's "model.layers.3.self_attn."), with the prefix stripped; the rest is not read.
    """
    files = weight_files(path, prefix)
    expected = module.state_dict()
    found = _headers(files, prefix)
    missing = sorted(k for k in expected if k not in found and k not in optional)
    unexpected = sorted(prefix + k for k in found if k not in expected)
    misshaped = sorted(f"{prefix}{k}: checkpoint {found[k][1]} vs model {tuple(expected[k].shape)}"
                       for k in found if k in expected and found[k][1] != tuple(expected[k].shape))
    if missing or unexpected or misshaped:
        lines = [f"checkpoint {path} does not match {type(module).__name__}" + (f" under {prefix!r}" if prefix else "")
                 + ":"]
        for title, items in (("missing", [prefix + k for k in missing]), ("unexpected", unexpected),
                             ("misshaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for f in tqdm(files, desc="loading shards", unit="shard", disable=len(files) < 2):
            try:
                with safe_open(str(f), framework="pt", device="cpu") as sf:
                    for name, (file, _) in found.items():
                        if file == f:
                            target = expected[name]
                            target.copy_(sf.get_tensor(prefix + name).to(dtype=target.dtype))
            except Exception as e:
                raise CheckpointError(f"cannot read {f}: {type(e).__name__}: {e}") from None
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


def build_pretrained(cls, config, path, dtype=None, device=None, optional=(), prefix=""):
    """`cls(config)` built directly in dtype on device (no fp32 copy first), then the checkpoint's weights."""
    with torch.device(device or "cpu"), default_dtype(dtype):
        model = cls(config)
    load_weights(model, path, optional=optional, prefix=prefix)
    return model.eval()


_UNITS = {"KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "B": 1}


def size_in_bytes(size) -> int:
    """5_000_000, "5GB" (10^9) or "5GiB" (2^30), as transformers reads max_shard_size."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    text = str(size).strip().upper()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[:-len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(text[:-len(unit)]) * _UNITS[unit])
    raise InputError(f"max_shard_size must be a positive int of bytes or a string like '5GB', got {size!r}")


def write_checkpoint(path, config_dict: dict, state_dict: dict, max_shard_bytes: int | None = None, drop=()):
    """config.json + safetensors (sharded with an index past max_shard_bytes), keys in `drop` left out."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config_dict, indent=2))
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in state_dict.items() if k not in drop}
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        (path / "model.safetensors.index.json").unlink(missing_ok=True)
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path
    shards, current, size = [], {}, 0
    for k, v in tensors.items():
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += nbytes
    shards.append(current)
    weight_map = {}
    (path / "model.safetensors").unlink(missing_ok=True)
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path


_DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "half": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype, config_dict: dict):
    """torch.dtype, a name ("bfloat16", "torch.float16"), "auto" (the config's dtype / torch_dtype) or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        name = config_dict.get("dtype") or config_dict.get("torch_dtype") or (config_dict.get("text_config") or {}).get(
            "dtype")
        return None if name is None else resolve_dtype(name, {})
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise InputError(f"dtype must be a torch.dtype, one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")
    return _DTYPES[name]


def resolve_device(device, device_map):
    """device= or transformers' device_map= ("cpu", "cuda", "cuda:1", "auto"; per-module maps are not supported)."""
    if device is not None and device_map is not None:
        raise InputError("pass device= or device_map=, not both")
    if device_map is not None:
        if isinstance(device_map, dict):
            raise InputError("device_map as a per-module dict is not supported: zoo puts a model on one device "
                             "(device_map='cuda', 'cpu' or 'auto')")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device_map == "auto" else device_map
    return None if device is None else torch.device(device)


def load_args(dtype, torch_dtype, device, device_map):
    """from_pretrained's dtype / torch_dtype / device / device_map, checked before any file is read -> (dtype or
    "auto", device)."""
    if torch_dtype is not None:
        if dtype is not None:
            raise InputError("pass dtype= or torch_dtype=, not both")
        dtype = torch_dtype
    device = resolve_device(device, device_map)
    if dtype != "auto":
        resolve_dtype(dtype, {})
    return dtype, device


def checkpoint_dir(path) -> Path:
    """A local checkpoint directory; a hub id gets one clear error (zoo never downloads)."""
    p = Path(path)
    if p.is_dir():
        return p
    hint = " (it looks like a hub id)" if isinstance(path, str) and path.count("/") == 1 and not p.exists() else ""
    raise CheckpointError(f"{path!r} is not a local checkpoint directory{hint}: zoo loads local directories only "
                          "and never downloads; fetch the files first (e.g. `huggingface-cli download NAME "
                          "--local-dir DIR`) and pass DIR")


class Pretrained:
    """Hugging Face conventions for a zoo_ref model: from_pretrained / save_pretrained / .device / .dtype.
    Subclasses set `config_class` (with from_dict / to_dict) and may name keys `tied_keys` leaves out when tied."""
    config_class = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None, *, torch_dtype=None, device_map=None):
        """A checkpoint directory (config.json + model.safetensors, or shards with an index) -> model in eval mode.
        dtype: torch.dtype, "bfloat16" and the like, or "auto" (the config's); torch_dtype= is the same argument
        under transformers' older name. device, or device_map="cpu" | "cuda" | "auto"."""
        dtype, device = load_args(dtype, torch_dtype, device, device_map)  # the arguments first, then the files
        path = checkpoint_dir(path)
        raw = read_config(path)
        config = cls.config_class.from_dict(raw)
        tied = ("lm_head.weight",) if config.tie_word_embeddings else ()
        return build_pretrained(cls, config, path, resolve_dtype(dtype, raw), device, optional=tied)

    def save_pretrained(self, path, max_shard_size="5GB"):
        """config.json + safetensors that transformers' from_pretrained reads back (sharded past max_shard_size)."""
        config = self.config.to_dict()
        config["dtype"] = str(self.dtype).removeprefix("torch.")
        tied = ("lm_head.weight",) if self.config.tie_word_embeddings else ()
        return write_checkpoint(path, config, self.state_dict(), size_in_bytes(max_shard_size), drop=tied)
