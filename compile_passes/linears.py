"""Sibling linears, and linears of one row.

Sibling linears: mm's (addmm's, with biases) that read the same input with weights (and biases) stored
back to back in one buffer become one mm whose output is sliced. zoo packs q/k/v (and gate/up, MLA's q_a/kv_a)
into one buffer at compile time (the parameters become views of it, values unchanged), so in decode one GEMV
streams all three weights instead of three small launches each ramping up to bandwidth.

The graph sees each weight as its own input, but fake tensors keep storage identity and offsets, so the
pass can prove adjacency: same storage, row-major [N_i, K], offsets consecutive.

Linears of one row (a batch-1 decode step: the input is statically [1, K]) then become zoo::gemv, which streams
the weight once through a Triton GEMV on CUDA instead of cuBLAS's GEMM tiles (kernels/gemv.py); linears with a
long reduction (K >= 16384: MLA's o_proj) become zoo::few_rows_mm, which does the same for up to 16 rows (a batched
decode step) where cuBLAS splits K (kernels/few_rows.py).
"""
from collections import defaultdict

import torch
from torch._guards import detect_fake_mode
from torch.multiprocessing.reductions import StorageWeakRef

from . import ops  # noqa: F401  (registers torch.ops.zoo.gemv, zoo.few_rows_mm)
from .patterns import site_of

aten = torch.ops.aten
# zoo::few_rows_mm's domain: rows up to its kernel's one tile of 16 (kernels/few_rows.py), reductions from 16384 on
# (where that kernel measured faster than cuBLAS; kept apart so that importing the pass needs no Triton)
MAX_ROWS, MIN_K = 16, 16384


def _transposed(node):
    """w when node is permute(w, [1, 0]) or t(w) (how a linear hands its weight to mm), else None."""
    if node.op != "call_function" or node.target not in (aten.permute.default, aten.t.default):
        return None
    if node.target is aten.permute.default and list(node.args[1]) != [1, 0]:
        return None
    return node.args[0]


def _weight(node):
    """mm's second operand when it is permute(w, [1, 0]) of a graph input w: [N, K] row-major -> w, else None."""
    w = _transposed(node)
    v = w.meta.get("val") if w is not None and w.op == "placeholder" else None
    if v is None or v.dim() != 2 or v.stride() != (v.shape[1], 1):
        return None
    return w


def _operands(node):
    """(input, weight placeholder, bias placeholder or None) of a linear's mm / addmm, else None."""
    if node.op != "call_function":
        return None
    if node.target is aten.mm.default:
        w = _weight(node.args[1])
        return None if w is None else (node.args[0], w, None)
    if node.target is aten.addmm.default and not node.kwargs:
        w, bias = _weight(node.args[2]), node.args[0]
        v = bias.meta.get("val") if isinstance(bias, torch.fx.Node) and bias.op == "placeholder" else None
        if w is None or v is None or v.dim() != 1 or v.stride() != (1,):
            return None
        return node.args[1], w, bias
    return None


def _storage(node):
    return None if node is None else StorageWeakRef(node.meta["val"].untyped_storage())


def _follows(prev, cur):
    """cur's tensor starts where prev's ends, in the same layout."""
    p, c = prev.meta["val"], cur.meta["val"]
    return (c.storage_offset() == p.storage_offset() + p.numel() and c.shape[1:] == p.shape[1:]
            and c.dtype == p.dtype)


def _same_input(x):
    """Each linear flattens its input with a view of its own: equal views of one tensor are the same input."""
    if x.op == "call_function" and x.target in (aten.view.default, aten.reshape.default, aten._unsafe_view.default):
        return (x.target, x.args[0], tuple(x.args[1]))
    return x


def _add(graph, target, args, like):
    """A new node with meta['val'] computed on the fake inputs, and `like`'s module stack."""
    node = graph.call_function(target, args)
    vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
    with detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)]):
        node.meta["val"] = target(*vals)
    if "nn_module_stack" in like.meta:
        node.meta["nn_module_stack"] = like.meta["nn_module_stack"]
    return node


def _adjacent_runs(members):
    """Split (mm node, weight, bias) triples of one storage into runs whose weights (and biases) sit back to back."""
    members = sorted(members, key=lambda m: m[1].meta["val"].storage_offset())
    runs, run = [], [members[0]]
    for prev, cur in zip(members, members[1:]):
        if _follows(prev[1], cur[1]) and (cur[2] is None or _follows(prev[2], cur[2])):
            run.append(cur)
        else:
            runs.append(run)
            run = [cur]
    runs.append(run)
    return [r for r in runs if len(r) > 1]


def merge_sibling_mms(graph: torch.fx.Graph) -> list:
    """Rewrite in place; returns the layer site of every merged group."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    groups = defaultdict(list)  # (input, weights' storage, biases' storage) -> [(mm, weight, bias)]
    for node in graph.nodes:
        operands = _operands(node)
        if operands is not None:
            x, w, bias = operands
            groups[(_same_input(x), _storage(w), _storage(bias))].append((node, w, bias))
    sites = []
    for members in groups.values():
        for run in _adjacent_runs(members):
            first = min((mm for mm, _, _ in run), key=order.get)
            x = first.args[0] if run[0][2] is None else first.args[1]
            w0 = run[0][1].meta["val"]
            sizes = [w.meta["val"].shape[0] for _, w, _ in run]
            site = site_of(first)
            with graph.inserting_before(first):
                wide = _add(graph, aten.as_strided.default,
                            (run[0][1], [sum(sizes), w0.shape[1]], [w0.shape[1], 1], w0.storage_offset()), first)
                wide_t = _add(graph, aten.permute.default, (wide, [1, 0]), first)
                if run[0][2] is None:
                    y = _add(graph, aten.mm.default, (x, wide_t), first)
                else:
                    b0 = run[0][2].meta["val"]
                    wide_b = _add(graph, aten.as_strided.default, (run[0][2], [sum(sizes)], [1], b0.storage_offset()),
                                  first)
                    y = _add(graph, aten.addmm.default, (wide_b, x, wide_t), first)
                starts = [sum(sizes[:i]) for i in range(len(sizes))]
                parts = [_add(graph, aten.slice.Tensor, (y, 1, a, a + n), first) for a, n in zip(starts, sizes)]
            for part, (mm, _, _) in zip(parts, run):  # erase only now: `first` anchored the insertions
                mm.replace_all_uses_with(part)
                weight_t = mm.args[1] if mm.target is aten.mm.default else mm.args[2]
                graph.erase_node(mm)
                if not weight_t.users:
                    graph.erase_node(weight_t)
            sites.append(site)
    return sites


def _linear(node):
    """(x, weight [N, K] node, bias node or None, x's fake value) of an mm / addmm whose weight is a transposed
    [N, K] tensor with unit stride along K, in x's dtype; else None."""
    if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default) or node.kwargs:
        return None
    bias, x, wt = (None, *node.args) if node.target is aten.mm.default else node.args
    w = _transposed(wt)
    if w is None:
        return None
    xv, wv, bv = x.meta.get("val"), w.meta.get("val"), None if bias is None else bias.meta.get("val")
    if xv is None or wv is None or xv.dim() != 2 or wv.dim() != 2 or wv.stride(1) != 1 or xv.dtype != wv.dtype:
        return None
    if bias is not None and (bv is None or bv.dim() != 1 or bv.stride() != (1,) or bv.dtype != wv.dtype):
        return None
    return x, w, bias, xv


def _one_row_linear(node):
    """_linear's (x, w, bias) when its input is statically one row; else None."""
    linear = _linear(node)
    if linear is None or not (isinstance(linear[3].shape[0], int) and linear[3].shape[0] == 1):
        return None
    return linear[:3]


def _few_rows_linear(node):
    """_linear's (x, w, bias) when K >= MIN_K and its rows are not statically more than MAX_ROWS (a batched decode
    step: the batch is often a symbolic size; the op picks its kernel from the real one); else None."""
    linear = _linear(node)
    if linear is None:
        return None
    rows, k = linear[3].shape
    if not isinstance(k, int) or k < MIN_K or (isinstance(rows, int) and rows > MAX_ROWS):
        return None
    return linear[:3]


def _replace_linears(graph, match, op) -> list:
    """Every linear `match` accepts -> op(x, w, bias). Returns each replaced linear's layer site."""
    sites = []
    for node in list(graph.nodes):
        operands = match(node)
        if operands is None:
            continue
        with graph.inserting_before(node):
            y = _add(graph, op, operands, node)
        node.replace_all_uses_with(y)
        sites.append(site_of(node))
        wt = node.args[-1]
        graph.erase_node(node)
        if not wt.users:
            graph.erase_node(wt)
    return sites


def one_row_gemvs(graph: torch.fx.Graph) -> list:
    """Linears of one row (batch-1 decode, after merge_sibling_mms) -> zoo::gemv, a Triton GEMV on CUDA (cuBLAS
    tiles them as GEMMs: see kernels/gemv.py). Returns each replaced linear's layer site."""
    return _replace_linears(graph, _one_row_linear, torch.ops.zoo.gemv.default)


def few_rows_mms(graph: torch.fx.Graph) -> list:
    """Linears with K >= 16384 whose rows may be few (after one_row_gemvs) -> zoo::few_rows_mm: on CUDA a Triton
    kernel streaming the weight once when M <= 16 (cuBLAS splits K there: see kernels/few_rows.py). Returns each
    replaced linear's layer site."""
    return _replace_linears(graph, _few_rows_linear, torch.ops.zoo.few_rows_mm.default)
