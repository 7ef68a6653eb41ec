"""Sibling linears: mm's that read the same input with weights stored back to back in one buffer become one
mm whose output is sliced. zoo packs q/k/v (and gate/up, MLA's q_a/kv_a) into one buffer at compile time (the
parameters become views of it, values unchanged), so in decode one GEMV streams all three weights instead
of three small launches each ramping up to bandwidth.

The graph sees each weight as its own input, but fake tensors keep storage identity and offsets, so the
pass can prove adjacency: same storage, row-major [N_i, K], offsets consecutive.
"""
from collections import defaultdict

import torch
from torch._guards import detect_fake_mode
from torch.multiprocessing.reductions import StorageWeakRef

from .patterns import site_of

aten = torch.ops.aten


def _weight(node):
    """mm's second operand when it is permute(w, [1, 0]) of a graph input w: [N, K] row-major -> w, else None."""
    if node.op != "call_function" or node.target not in (aten.permute.default, aten.t.default):
        return None
    if node.target is aten.permute.default and list(node.args[1]) != [1, 0]:
        return None
    w = node.args[0]
    v = w.meta.get("val") if w.op == "placeholder" else None
    if v is None or v.dim() != 2 or v.stride() != (v.shape[1], 1):
        return None
    return w


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
    """Split (mm node, weight) pairs of one storage into runs whose weights sit back to back."""
    members = sorted(members, key=lambda m: m[1].meta["val"].storage_offset())
    runs, run = [], [members[0]]
    for prev, cur in zip(members, members[1:]):
        p, c = prev[1].meta["val"], cur[1].meta["val"]
        if c.storage_offset() == p.storage_offset() + p.numel() and c.shape[1] == p.shape[1] and c.dtype == p.dtype:
            run.append(cur)
        else:
            runs.append(run)
            run = [cur]
    runs.append(run)
    return [r for r in runs if len(r) > 1]


def merge_sibling_mms(graph: torch.fx.Graph) -> list:
    """Rewrite in place; returns the layer site of every merged group."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    groups = defaultdict(list)  # (input, weights' storage) -> [(mm, weight)]
    for node in graph.nodes:
        if node.op == "call_function" and node.target is aten.mm.default:
            w = _weight(node.args[1])
            if w is not None:
                groups[(_same_input(node.args[0]), StorageWeakRef(w.meta["val"].untyped_storage()))].append((node, w))
    sites = []
    for members in groups.values():
        for run in _adjacent_runs(members):
            first = min((mm for mm, _ in run), key=order.get)
            x = first.args[0]
            w0 = run[0][1].meta["val"]
            sizes = [w.meta["val"].shape[0] for _, w in run]
            site = site_of(first)
            with graph.inserting_before(first):
                wide = _add(graph, aten.as_strided.default,
                            (run[0][1], [sum(sizes), w0.shape[1]], [w0.shape[1], 1], w0.storage_offset()), first)
                y = _add(graph, aten.mm.default, (x, _add(graph, aten.permute.default, (wide, [1, 0]), first)), first)
                starts = [sum(sizes[:i]) for i in range(len(sizes))]
                parts = [_add(graph, aten.slice.Tensor, (y, 1, a, a + n), first) for a, n in zip(starts, sizes)]
            for part, (mm, _) in zip(parts, run):  # erase only now: `first` anchored the insertions
                mm.replace_all_uses_with(part)
                weight_t = mm.args[1]
                graph.erase_node(mm)
                if not weight_t.users:
                    graph.erase_node(weight_t)
            sites.append(site)
    return sites
