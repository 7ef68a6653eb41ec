"""zoo: the user API over the zoo_ref reference models.

    compiled = zoo.compile(model)          # Qwen3 / Qwen2 / Qwen3-VL (zoo_ref) or DeepSeek MLA
    print(zoo.explain(compiled))           # what the passes replaced, graphs, CUDA graphs
    zoo.export_cache("model.zoocache")     # ship the compiled graphs; zoo.import_cache(...) elsewhere
"""
import importlib

__version__ = "0.1.0"
_RUNTIMES = ("zoo.runtime", "zoo.qwen3_vl", "zoo.mla")  # each registers the zoo_ref classes it serves


def compile(model, max_batch_size=8, max_seq_len=2048, dtype=None, cuda_graphs=True,
            passes=("attention", "rope", "linears"), cache_dir=None, encoder_cache_mb=None):
    """Compile a zoo_ref model: same call interface and outputs, fused attention and RoPE, static caches,
    CUDA-graph decode on GPU. dtype: cast a copy of the model (otherwise the model is used as is).
    passes: "attention", "rope", "linears" (the last packs sibling weights, e.g. q/k/v, into one buffer in
    place: the parameters become views of it, their values and the model's results unchanged; it also runs
    one-row linears as a GEMV, with the RMSNorm / SwiGLU before and the residual add after folded in, and a tanh
    GELU after a linear in the matmul's epilogue; "rope" also folds Qwen3's q/k norms and, in decode, the K/V cache
    writes into its kernel).
    cache_dir: where compiled graphs persist across processes (None: $ZOO_CACHE_DIR or ~/.cache/zoo; False: off).
    encoder_cache_mb: Qwen3-VL's vision features kept by image content (default 256 MB; 0: off).
    Nothing process-wide changes: Dynamo and Inductor settings apply to zoo's own compiles only."""
    import copy

    from .registry import runtime_for
    for name in _RUNTIMES:
        importlib.import_module(name)
    runtime = runtime_for(model)
    if dtype is not None and dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(dtype)
    extra = {}
    if encoder_cache_mb is not None:
        if not hasattr(model, "visual") and not hasattr(getattr(model, "model", None), "visual"):
            from zoo_ref.errors import InputError
            raise InputError("encoder_cache_mb applies to models with a vision encoder (Qwen3-VL)")
        extra["encoder_cache_mb"] = encoder_cache_mb
    return runtime(model, max_batch_size=max_batch_size, max_seq_len=max_seq_len, cuda_graphs=cuda_graphs,
                   passes=passes, cache_dir=cache_dir, **extra)


def export_cache(path, cache_dir=None):
    """Write this process's compiled graphs and zoo's pass records into one file (see zoo/cache.py)."""
    from .cache import export_cache as _export
    return _export(path, cache_dir)


def import_cache(path, cache_dir=None):
    """Install an export_cache file into the cache directory; later zoo.compile calls load from it."""
    from .cache import import_cache as _import
    return _import(path, cache_dir)


def explain(compiled):
    from .report import explain as _explain
    return _explain(compiled)
