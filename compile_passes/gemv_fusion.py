"""Fold a one-row linear's neighbours into its GEMV (after one_row_gemvs; batch-1 decode only).

A batch-1 decode step is ~15 kernels per layer, most of them tiny: on an H200 each costs ~1.5-2 us of launch, ramp
and round trip for a few KB of data, ~0.4 ms of a 1.9 ms Qwen3-VL-2B step. Three of them border a GEMV, which
reads the whole input row in every program anyway (kernels/gemv.py), so they fold in at no extra memory pass:
- `gemv_norm`: RMSNorm (zoo_ref's rms_norm, over the row's last dim) -> GEMV: the input and
  post-attention norms;
- `gemv_swiglu`: silu(gate) * up -> GEMV: the MLP's down projection;
- `gemv_residual`: residual + GEMV(...): the adds after o_proj and down_proj.
The fused GEMV is zoo::gemv_fused; it skips the bf16 roundings between the folded steps (all math in fp32), so
bf16 results differ from the unfused ones at rounding level, as the fused attention kernels do.
"""
import torch

from zoo_ref.layers import activation, rms_norm

from . import ops  # noqa: F401  (registers torch.ops.zoo.*)
from .linears import _add
from .patterns import Replacement, site_of

aten = torch.ops.aten
_silu = activation("silu")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _search_norm(x, g, w, eps):
    return torch.ops.zoo.gemv(rms_norm(x, g, eps).view(1, -1), w, None)


def _replace_norm(x, g, w, eps):
    return torch.ops.zoo.gemv_fused(x.view(1, -1), w, None, None, g, eps, None)


def _search_norm_bias(x, g, w, bias, eps):
    return torch.ops.zoo.gemv(rms_norm(x, g, eps).view(1, -1), w, bias)


def _replace_norm_bias(x, g, w, bias, eps):
    return torch.ops.zoo.gemv_fused(x.view(1, -1), w, bias, None, g, eps, None)


def _search_swiglu(a, b, w):
    return torch.ops.zoo.gemv((_silu(a) * b).view(1, -1), w, None)


def _replace_swiglu(a, b, w):
    return torch.ops.zoo.gemv_fused(b.view(1, -1), w, None, a.view(1, -1), None, 0.0, None)


def _val(match, name):
    return match.kwargs[name].meta["val"]


def _norm_ok(match) -> bool:
    """The norm runs over the whole row: x is one row of K (not heads of it), its weight [K]."""
    x, g, w = (_val(match, n) for n in ("x", "g", "w"))
    return x.numel() == x.shape[-1] == w.shape[1] and tuple(g.shape) == (w.shape[1],) and x.dtype == w.dtype


def _swiglu_ok(match) -> bool:
    a, b, w = (_val(match, n) for n in ("a", "b", "w"))
    return a.shape == b.shape and a.numel() == w.shape[1] and a.dtype == b.dtype == w.dtype


def gemv_fusion_replacements():
    """The prologue patterns, traced per dtype (x [1, 1, K], weight [N, K]; ints in the pattern are wildcards and
    the checks above pin the shapes)."""
    norm = Replacement("gemv_norm", None, _search_norm, _replace_norm, scalar_name="eps", extra_check=_norm_ok)
    norm_bias = Replacement("gemv_norm", None, _search_norm_bias, _replace_norm_bias, scalar_name="eps",
                            extra_check=_norm_ok)
    swiglu = Replacement("gemv_swiglu", None, _search_swiglu, _replace_swiglu, extra_check=_swiglu_ok)
    for dtype in _DTYPES:
        x, g, w, b = (torch.empty(s, dtype=dtype) for s in ((1, 1, 8), (8,), (6, 8), (6,)))
        norm.register_like([x, g, w, None])
        norm_bias.register_like([x, g, w, b, None])
        swiglu.register_like([x, x, w])
    return [norm, norm_bias, swiglu]


def drop_dead_views(graph: torch.fx.Graph) -> None:
    """Views nobody reads (each linear flattens its input once; merged siblings leave the others behind): a pattern
    does not match across a node that has readers outside it, even dead ones."""
    views = (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.slice.Tensor)
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and node.target in views and not node.users:
            graph.erase_node(node)


_GEMVS = (torch.ops.zoo.gemv.default, torch.ops.zoo.gemv_fused.default)


def _folded_gemv(v):
    """The GEMV whose only reader is the view v (and v's only reader the add), with no residual yet; else None."""
    if v.op != "call_function" or v.target is not aten.view.default or len(v.users) != 1:
        return None
    gemv = v.args[0]
    if gemv.op != "call_function" or gemv.target not in _GEMVS or len(gemv.users) != 1:
        return None
    return None if gemv.target is torch.ops.zoo.gemv_fused.default and gemv.args[6] is not None else gemv


def fold_residuals(graph: torch.fx.Graph) -> list:
    """add(residual, view(GEMV)) -> zoo::gemv_fused with the residual added in its epilogue. Returns the sites."""
    sites = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.add.Tensor or node.kwargs or len(node.args) != 2:
            continue
        if not all(isinstance(a, torch.fx.Node) for a in node.args):
            continue
        for r, v in (node.args, node.args[::-1]):
            gemv = _folded_gemv(v)
            out, rv = node.meta["val"], r.meta.get("val")
            if gemv is None or rv is None or rv.shape != out.shape or v.meta["val"].shape != out.shape:
                continue
            if rv.dtype != out.dtype or not rv.is_contiguous():
                continue
            args = gemv.args if gemv.target is torch.ops.zoo.gemv_fused.default else (*gemv.args, None, None, 0.0)
            with graph.inserting_before(node):
                row = _add(graph, aten.view.default, (r, [1, out.numel()]), node)
                fused = _add(graph, torch.ops.zoo.gemv_fused.default, (*args[:6], row), gemv)
                y = _add(graph, aten.view.default, (fused, list(out.shape)), node)
            node.replace_all_uses_with(y)
            for dead in (node, v, gemv):
                graph.erase_node(dead)
            sites.append(site_of(y))
            break
    return sites
