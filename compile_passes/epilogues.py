"""Matmul epilogues. GELU (tanh) of a linear -> zoo::linear_gelu_tanh, one matmul with the GELU in its epilogue on
CUDA (cuBLASLt through aten._addmm_activation; plain torch elsewhere); and a residual added to a linear at the end
of a graph -> one addmm (fold_gemm_residuals, below).

The vision MLP's fc1 output (patches x 4096) is otherwise written by the matmul, then read and written again by an
elementwise kernel: for 4096 patches 71 -> 56 us per block on an H200, 24 blocks. The epilogue applies the GELU to
the fp32 accumulator before rounding (the unfused path rounds first). The search is traced per dtype (the GELU's
decomposition casts bf16 / fp16 to fp32 and back); there is no zoo_ref function to record call sites from, so the
layouts are the linear's own: bias [N], x [M, K], weight [N, K] transposed.
"""
import torch
import torch.nn.functional as F

from . import ops  # noqa: F401  (registers torch.ops.zoo.*)
from .patterns import Replacement, site_of

aten = torch.ops.aten


def _search(bias, x, w):
    return F.gelu(torch.addmm(bias, x, w.permute(1, 0)), approximate="tanh")


def _replace(bias, x, w):
    return torch.ops.zoo.linear_gelu_tanh(x, w, bias)


def _shapes_ok(match) -> bool:
    b, x, w = (match.kwargs[n].meta["val"] for n in ("bias", "x", "w"))
    return b.dim() == 1 and x.dim() == w.dim() == 2 and b.dtype == x.dtype == w.dtype


def gelu_epilogue_replacements():
    rep = Replacement("gelu_epilogue", None, _search, _replace, extra_check=_shapes_ok)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        rep.register_like([torch.empty(8, dtype=dtype), torch.empty(4, 6, dtype=dtype), torch.empty(8, 6, dtype=dtype)])
    return [rep]


def _node(graph, target, args, like):
    """A new node with meta['val'] computed on the fake values (shape lists may hold symbolic sizes)."""
    node = graph.call_function(target, args)
    vals = torch.fx.node.map_arg(args, lambda n: n.meta["val"])
    fakes = [v for v in torch.utils._pytree.tree_leaves(vals) if isinstance(v, torch.Tensor)]
    with torch._guards.detect_fake_mode(fakes):
        node.meta["val"] = target(*vals)
    if "nn_module_stack" in like.meta:
        node.meta["nn_module_stack"] = like.meta["nn_module_stack"]
    return node


def _only_reader(node, reader) -> bool:
    return isinstance(node, torch.fx.Node) and list(node.users) == [reader]


def _residual_operands(add):
    """(residual, matmul, view of it or None) when add = residual + [view of] mm / addmm and the matmul's product
    is read by nothing else, shapes equal (no broadcast), one dtype; else None."""
    if add.op != "call_function" or add.target is not aten.add.Tensor or add.kwargs or len(add.args) != 2:
        return None
    out = add.meta.get("val")
    for r, v in (add.args, add.args[::-1]):
        if not isinstance(r, torch.fx.Node) or not _only_reader(v, add) or out is None:
            continue
        view = v if v.target is aten.view.default else None
        mm = view.args[0] if view is not None else v
        if not _only_reader(mm, view or add) or mm.target not in (aten.mm.default, aten.addmm.default) or mm.kwargs:
            continue
        rv, mv = r.meta.get("val"), mm.meta.get("val")
        if rv is None or rv.shape != out.shape or v.meta["val"].shape != out.shape or not rv.is_contiguous():
            continue
        if not rv.dtype == mv.dtype == out.dtype:
            continue
        return r, mm, view
    return None


def fold_gemm_residuals(graph: torch.fx.Graph) -> list:
    """residual + linear(x) at a graph's end (a layer's or vision block's output) -> addmm(residual [+ bias], x, w):
    the matmul's epilogue adds the residual (cuBLAS reads it as C), so no elementwise kernel reads the product back
    and writes the sum. Only where the sum is the graph's output: a sum read inside the graph (a norm after
    o_proj) is fused into its reader by Inductor already. Returns the sites."""
    sites = []
    for add in list(graph.nodes):
        if not add.users or any(u.op != "output" for u in add.users):
            continue
        found = _residual_operands(add)
        if found is None:
            continue
        r, mm, view = found
        n = mm.meta["val"].shape[-1]
        if not isinstance(n, int):  # the residual's [M, N] view needs N as a number
            continue
        with graph.inserting_before(add):
            c = r if view is None else _node(graph, aten.view.default, (r, [-1, n]), add)
            if mm.target is aten.addmm.default:  # the linear's bias joins the residual (Inductor fuses the add
                c = _node(graph, aten.add.Tensor, (c, mm.args[0]), add)  # into whatever wrote the residual)
            y = _node(graph, aten.addmm.default, (c, *mm.args[-2:]), mm)
            if view is not None:
                y = _node(graph, aten.view.default, (y, view.args[1]), add)
        add.replace_all_uses_with(y)
        for dead in (add, view, mm):
            if dead is not None:
                graph.erase_node(dead)
        sites.append(site_of(y))
    return sites
