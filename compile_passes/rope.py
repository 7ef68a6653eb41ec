"""RoPE pass: zoo_ref.layers.rotate (text M-RoPE, vision 2D, MLA YaRN all rotate through it) -> one in-place
zoo::rope_ per layer that rotates q and k in a single kernel.

Step 1 (pattern): each `rotate(x, cos, sin)` becomes the functional marker op zoo::rotary.
Step 2 (pairing): the two zoo::rotary calls of one layer with the same cos/sin (its q and its k) become one
zoo::rope_, written functionalized (auto_functionalized), as functionalization would have; Inductor's
reinplacing turns it into a true in-place call on q and k where they live. Where q or k is a view into a tensor
other views still read (the vision's qkv projection), in place would cost a copy of that tensor first: such a pair
becomes zoo::rope_pair, the same kernel writing new tensors. A rotation with no partner stays a zoo::rotary
(still one fused kernel, out of place).

A rotation of a per-head RMSNorm (Qwen3's q_norm / k_norm) is matched first, as zoo::norm_rotary, and a q/k pair of
those becomes zoo::norm_rope_pair: the same kernel normalizing each head as it loads it, writing new q and k (the
norms' own kernels and their writes go; in a batch-1 decode step, 2 of ~11 kernels per layer).
"""
import operator
from collections import defaultdict

import torch
from torch._higher_order_ops.auto_functionalize import auto_functionalized
from torch._inductor.pattern_matcher import stable_topological_sort

from zoo_ref.layers import rms_norm, rotate

from . import ops  # noqa: F401  (registers torch.ops.zoo.*)
from .patterns import Replacement, site_of


def _search(x, cos, sin):
    return rotate(x, cos, sin)


def _replace(x, cos, sin):
    return torch.ops.zoo.rotary(x, cos, sin)


def _shapes_ok(match) -> bool:
    """x [..., H, D] with cos/sin [..., 1, D] (broadcast over heads)."""
    x, c = match.kwargs["x"].meta["val"].shape, match.kwargs["cos"].meta["val"].shape
    return len(x) == len(c) and x[-1] == c[-1] and c[-2] == 1


def _search_norm(x, w, cos, sin, eps):
    return rotate(rms_norm(x, w, eps), cos, sin)


def _replace_norm(x, w, cos, sin, eps):
    return torch.ops.zoo.norm_rotary(x, w, eps, cos, sin)


def _norm_shapes_ok(match) -> bool:
    """x [..., H, D] normalized per head with a weight [D], then rotated by cos/sin [..., 1, D]."""
    x, w, c = (match.kwargs[n].meta["val"] for n in ("x", "w", "cos"))
    return len(x.shape) == len(c.shape) and x.shape[-1] == c.shape[-1] == w.shape[-1] and w.dim() == 1 and \
        c.shape[-2] == 1


class _RopeReplacement(Replacement):
    """The rope pattern; each call-site layout it learns also registers the same rotation of a per-head RMSNorm
    (Qwen3's q_norm / k_norm right before RoPE), searched first."""

    def __init__(self, with_norm: Replacement):
        super().__init__("rope", rotate, _search, _replace, extra_check=_shapes_ok)
        self.with_norm = with_norm

    def register_like(self, args):
        super().register_like(args)
        x, cos, sin = args
        self.with_norm.register_like([x, x.new_empty(x.shape[-1]), cos, sin, None])


def rope_replacements():
    with_norm = Replacement("rope_norm", None, _search_norm, _replace_norm, scalar_name="eps",
                            extra_check=_norm_shapes_ok)
    return [with_norm, _RopeReplacement(with_norm)]


aten = torch.ops.aten
_VIEW_OPS = {aten.view.default, aten._unsafe_view.default, aten.select.int, aten.slice.Tensor, aten.unbind.int,
             aten.split.Tensor, aten.split_with_sizes.default, aten.permute.default, aten.transpose.int, aten.t.default,
             aten.unsqueeze.default, aten.squeeze.dim, aten.expand.default, aten.as_strided.default, aten.alias.default}


def _is_view(node) -> bool:
    """Made by a view op (unbind of the vision's qkv, a slice of Qwen2's packed q/k/v): its siblings are usually
    still read, and an in-place rotation would make Inductor copy the whole base first. (Read from the graph: the
    fake values of a functionalized graph do not record that they are views.)"""
    if node.op == "call_function" and node.target is operator.getitem:  # one output of unbind / split
        node = node.args[0]
    return node.op == "call_function" and node.target in _VIEW_OPS


def pair_qk(graph: torch.fx.Graph) -> int:
    """Fuse each layer's q and k zoo::rotary calls into one zoo::rope_. Returns the number of fused pairs."""
    groups = defaultdict(list)
    for node in graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.zoo.rotary.default:
            x, cos, sin = node.args
            groups[(cos, sin, site_of(node), None)].append(node)
        elif node.op == "call_function" and node.target is torch.ops.zoo.norm_rotary.default:
            x, w, eps, cos, sin = node.args
            groups[(cos, sin, site_of(node), eps)].append(node)
    fused = 0
    for (cos, sin, site, eps), nodes in groups.items():
        if site == "-" and len(nodes) > 2:  # no layer information: pairing by order would be a guess
            continue
        for q_node, k_node in zip(nodes[0::2], nodes[1::2]):
            q, k = q_node.args[0], k_node.args[0]
            with graph.inserting_after(k_node):
                if eps is not None:  # normalized first: reads the projection, writes new q and k
                    call = graph.call_function(torch.ops.zoo.norm_rope_pair.default,
                                               (q, k, q_node.args[1], k_node.args[1], eps, cos, sin))
                    first = 0
                elif _is_view(q) or _is_view(k):
                    call = graph.call_function(torch.ops.zoo.rope_pair.default, (q, k, cos, sin))
                    first = 0
                else:
                    call = graph.call_function(auto_functionalized, (torch.ops.zoo.rope_.default,),
                                               {"q": q, "k": k, "cos": cos, "sin": sin})
                    first = 1
                call.meta.update({k: k_node.meta[k] for k in ("nn_module_stack", "stack_trace") if k in k_node.meta})
                call.meta["val"] = (None,) * first + (q_node.meta.get("val"), k_node.meta.get("val"))
                q_out = graph.call_function(operator.getitem, (call, first))
                k_out = graph.call_function(operator.getitem, (call, first + 1))
            for old, new in ((q_node, q_out), (k_node, k_out)):
                new.meta.update({k: old.meta[k] for k in ("nn_module_stack", "stack_trace", "val") if k in old.meta})
                old.replace_all_uses_with(new)
                graph.erase_node(old)
            fused += 1
    if fused:
        stable_topological_sort(graph)
    return fused


def _only_user(node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _cache_write(node):
    """(cache placeholder, slot, value before its [0, 2, 1, 3] permute) of index_put(cache, [None, None, slot],
    permute(value)) -- zoo_ref's KVCache.update, functionalized -- else None."""
    if node.op != "call_function" or node.target is not aten.index_put.default or len(node.args) != 3 or node.kwargs:
        return None
    cache, index, value = node.args
    if cache.op != "placeholder" or len(index) != 3 or index[0] is not None or index[1] is not None:
        return None
    if value.target is not aten.permute.default or list(value.args[1]) != [0, 2, 1, 3] or len(value.users) != 1:
        return None
    c = cache.meta["val"]
    return (cache, index[2], value.args[0]) if c.dim() == 4 and c.is_contiguous() else None


def fold_cache_writes(graph: torch.fx.Graph) -> list:
    """zoo::norm_rope_pair whose k only goes into the K cache, beside the V cache's write at the same slots ->
    zoo::norm_rope_cache_ writing both caches (two copy kernels per layer fewer). Returns the layer sites."""
    sites = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.zoo.norm_rope_pair.default:
            continue
        getters = {u.args[1]: u for u in node.users if u.target is operator.getitem}
        k_out = getters.get(1)
        k_perm = _only_user(k_out) if k_out is not None and len(node.users) == 2 else None
        k_put = _only_user(k_perm) if k_perm is not None else None
        k_write = _cache_write(k_put) if k_put is not None else None
        if k_write is None or k_write[2] is not k_out:
            continue
        k_cache, slot, _ = k_write
        v_writes = [(u, w) for u, w in ((u, _cache_write(u)) for u in slot.users if u is not k_put)
                    if w is not None and w[0] is not k_cache and site_of(u) == site_of(node)]
        if len(v_writes) != 1:
            continue
        (v_put, (v_cache, _, v)), = v_writes
        q, k, qw, kw, eps, cos, sin = node.args
        with graph.inserting_before(k_put):  # wherever: stable_topological_sort below orders it after v's inputs
            call = graph.call_function(auto_functionalized, (torch.ops.zoo.norm_rope_cache_.default,),
                                       {"q": q, "k": k, "v": v, "q_weight": qw, "k_weight": kw, "eps": eps,
                                        "cos": cos, "sin": sin, "k_cache": k_cache, "v_cache": v_cache,
                                        "slot": slot})
            call.meta.update({m: node.meta[m] for m in ("nn_module_stack", "stack_trace") if m in node.meta})
            call.meta["val"] = (node.meta["val"][0], k_put.meta["val"], v_put.meta["val"])
            outs = [graph.call_function(operator.getitem, (call, i)) for i in range(3)]
        for out, old in zip(outs, (getters[0], k_put, v_put)):
            out.meta.update({m: old.meta[m] for m in ("nn_module_stack", "stack_trace", "val") if m in old.meta})
            old.replace_all_uses_with(out)
        v_perm = v_put.args[2]
        for dead in (k_put, v_put, k_perm, v_perm, k_out, getters[0], node):
            if not dead.users:
                graph.erase_node(dead)
        sites.append(site_of(call))
    if sites:
        stable_topological_sort(graph)
    return sites
