"""Search patterns traced from zoo_ref's own functions, registered per call-site layout.

The same Python function traces to different aten graphs depending on its inputs' layouts (a transposed
q adds a clone before the matmul; an n_rep of 1 drops the GQA expand; fp32 has no casts around softmax).
So a pattern is registered with example inputs shaped and strided like the real call sites, which we learn
by running the model once with zoo_ref's functions wrapped (`record_call_sites`). The math is never copied.
"""
import inspect
import re
import sys
from contextlib import contextmanager

import torch
from torch._inductor.pattern_matcher import PatternMatcherPass, fwd_only, gen_pattern, register_graph_pattern
from torch._subclasses.fake_tensor import unset_fake_temporarily

_LAYER = re.compile(r"(layers|blocks)[.\[]'?(\d+)")


def site_of(node) -> str:
    """The layer a graph node belongs to ('layers.3', 'blocks.0'; 'lm_head' for the output projection and what
    fuses into it; '-' elsewhere), from its module stack."""
    stack = [str(path) for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
    for path in reversed(stack):
        m = _LAYER.search(path)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return "lm_head" if stack and stack[-1].endswith(".lm_head") else "-"


def _layout_key(x):
    if not isinstance(x, torch.Tensor):
        return type(x).__name__
    # contiguity class, dtype and rank decide the traced graph; exact sizes do not (ints are wildcards)
    dims = [i for i in range(x.dim()) if x.shape[i] != 1]
    order = tuple(sorted(dims, key=lambda i: -x.stride(i)))
    return (x.dtype, x.dim(), order, x.is_contiguous(), tuple(s == 1 for s in x.shape))


def _call_key(args):
    """What decides one call's traced graph: each argument's layout, and which sizes are equal across arguments
    (q with as many heads as k drops the GQA expand): two call sites that differ only there trace differently."""
    sizes = {}
    equal = tuple(tuple(sizes.setdefault(int(s), len(sizes)) for s in a.shape) if isinstance(a, torch.Tensor)
                  else None for a in args)
    return tuple(_layout_key(a) for a in args) + (equal,)


def _layout_of(x):
    """What an example needs of a real argument (its layout, not its values: the tensor itself is not kept)."""
    return (tuple(x.shape), x.stride(), x.dtype, x.device) if isinstance(x, torch.Tensor) else None


def _example(layout, magic):
    """Random values with `layout`, drawn from a generator of our own (torch's global RNG stays untouched)."""
    if layout is None:
        return magic
    shape, stride, dtype, device = layout
    g = torch.Generator(device=device).manual_seed(0)
    y = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    if dtype == torch.bool:
        return y.copy_(torch.rand(shape, device=device, generator=g) > 0.5)
    if not dtype.is_floating_point:  # slots, positions
        return y.copy_(torch.randint(0, 8, shape, device=device, generator=g))
    return y.normal_(generator=g)


class Replacement:
    """A zoo_ref function (the oracle) and what replaces it; one PatternMatcherPass of its own."""

    def __init__(self, name: str, target, search, replace, scalar_name=None, magic=0.2718281, extra_check=None):
        self.name, self.target, self.search, self.replace = name, target, search, replace
        self.extra_check = extra_check
        self.scalar_name, self.magic = scalar_name, magic
        self.argnames = list(inspect.signature(search).parameters)
        self.matcher = PatternMatcherPass(pass_name=f"zoo_{name}")
        self.keys = set()
        self.pending = []  # layouts seen but not traced yet (tracing waits for the first graph to search)
        self.patterns = set()
        self.replaced_sites = []  # layer of each site replaced by the last apply()

    def register_like(self, args):
        """Note the layouts of `args` (the arguments of one real call): a pattern for them is traced when a graph is
        first searched, so a process whose graphs all come from the compile cache never traces one."""
        key = _call_key(args)
        if key not in self.keys:
            self.keys.add(key)
            self.pending.append([_layout_of(a) for a in args])

    def _register(self, layouts):
        """Register the pattern for one call-site layout.

        Like register_replacement, minus its re-trace check: that check re-traces the search function on
        the graph's symbolic-shape inputs, which decomposes differently from the graph itself, so nothing
        would ever match in a dynamic-shape graph. Shapes are checked by `extra_check` instead, and the
        tests compare every compiled graph with zoo_ref."""
        examples = [_example(layout, self.magic) for layout in layouts]
        workaround = {self.scalar_name: self.magic} if self.scalar_name else {}
        with torch.no_grad():
            pattern = gen_pattern(self.search, examples, fwd_only, workaround)
        if str(pattern) in self.patterns:  # another layout traced to the very same graph
            return
        self.patterns.add(str(pattern))

        def handler(match, *_, **kwargs):
            out = match.output_nodes()[0]
            self.replaced_sites.append(site_of(out))
            stack, before = out.meta.get("nn_module_stack"), set(match.graph.nodes)
            match.replace_by_example(self.replace, [kwargs[n] for n in self.argnames])
            if stack:  # the replacement belongs to the same module (layer) as what it replaced
                for node in match.graph.nodes:
                    if node not in before:
                        node.meta.setdefault("nn_module_stack", stack)
        register_graph_pattern(pattern, extra_check=self.extra_check or (lambda m: True),
                               pass_dict=self.matcher)(handler)

    def apply(self, graph) -> int:
        self.replaced_sites = []
        if self.pending:  # inside Inductor's compile: trace on real tensors, outside its fake mode and context
            with unset_fake_temporarily(), torch._guards.tracing(None):
                while self.pending:
                    self._register(self.pending.pop(0))
        return self.matcher.apply(graph) if self.keys else 0


@contextmanager
def record_call_sites(replacements):
    """Wrap the zoo_ref functions the replacements search for, wherever zoo_ref modules bound them, so that
    running the model registers a pattern for every call-site layout."""
    by_target = {r.target: r for r in replacements}
    patched = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("zoo_ref") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            rep = by_target.get(value) if callable(value) else None
            if rep is None:
                continue

            def wrapper(*args, _rep=rep, _fn=value):
                _rep.register_like(args)
                return _fn(*args)
            setattr(module, attr, wrapper)
            patched.append((module, attr, value))
    try:
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
