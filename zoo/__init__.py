"""zoo: the user API over the zoo_ref reference models.

    compiled = zoo.compile(model)          # Qwen3VLForConditionalGeneration or deepseek MLA
    print(zoo.explain(compiled))           # what the passes replaced, graphs, CUDA graphs
"""
__version__ = "0.1.0"


def compile(model, max_batch_size=8, max_seq_len=2048, dtype=None, cuda_graphs=True,
            passes=("attention", "rope", "linears")):
    """Compile a zoo_ref model: same call interface and outputs, fused attention and RoPE, static caches,
    CUDA-graph decode on GPU. dtype: cast a copy of the model (otherwise the model is used as is).
    passes: "attention", "rope", "linears" (the last packs sibling weights, e.g. q/k/v, into one buffer in
    place: the parameters become views of it, their values and the model's results unchanged)."""
    import copy

    from zoo_ref.deepseek import MLA
    from zoo_ref.qwen3_vl import Qwen3VLForConditionalGeneration

    from . import ops  # noqa: F401  (registers torch.ops.zoo.*)
    if dtype is not None and dtype != next(model.parameters()).dtype:
        model = copy.deepcopy(model).to(dtype)
    if isinstance(model, Qwen3VLForConditionalGeneration):
        from .qwen3_vl import CompiledQwen3VL
        return CompiledQwen3VL(model, max_batch_size, max_seq_len, cuda_graphs, passes)
    if isinstance(model, MLA):
        from .mla import CompiledMLA
        return CompiledMLA(model, cuda_graphs, passes)
    raise TypeError(f"zoo.compile supports zoo_ref Qwen3VLForConditionalGeneration and MLA, got {type(model).__name__}")


def explain(compiled):
    from .report import explain as _explain
    return _explain(compiled)
