"""Regional compilation: one decoder layer (or vision block) compiled once and run for every layer.

Traced whole, a 28-layer graph costs Dynamo ~0.3 s and Inductor ~1.5-2 s per layer, for every graph (prompt,
conversation turn, decode, vision): 124 s from zoo.compile to Qwen3-VL-2B's first token on an H200, and 26 s in a
second process that loads every graph from the cache (Dynamo still traces them). The layers are one module type
running the same code, so one graph serves all of them: Dynamo passes each layer's parameters and cache buffers as
graph inputs and its guards hold for every layer (no recompiles).

The mask is built inside the region from the structure the runtime passes (each row's token window, the frames'
bounds), so the attention pass still sees how the mask is made and swaps it for attention over that structure: no
[B, 1, T, S] mask exists inside or outside the region. What runs between the layers (embedding, rotary, deepstack
sums, final norm, lm_head) is zoo_ref's code as is; on a GPU it runs inside the step's CUDA graph.
"""
import functools


class Regions:
    """`body(layer, x, cos, sin, cache, cache_pos, *structure, window=w)` compiled once per window size (0 for
    full attention) under `name`; a zoo_ref `layer_fn` (decoder) and `block_fn` (vision). `sites` maps each layer
    module to its name ("layers.3"): explain reports every layer a region ran for. compiler None: run eagerly
    (the runtime's pattern registration)."""

    def __init__(self, compiler, name: str, body, dynamic, sites: dict):
        self.compiler, self.name, self.body, self.dynamic, self.sites = compiler, name, body, dynamic, sites
        self.fns = {}

    def fn(self, window: int = 0):
        """-> (the body for layers with this window, compiled or not; its name)."""
        if window not in self.fns:
            body = functools.partial(self.body, window=window)
            name = self.name if not window else f"{self.name} window={window}"
            self.fns[window] = (body if self.compiler is None else self.compiler(body, name, self.dynamic), name)
        return self.fns[window]

    def _run(self, window, layer, *args):
        fn, name = self.fn(window)
        if self.compiler is not None:
            self.compiler.serves[name].add(self.sites[id(layer)])
        return fn(layer, *args)

    def decoder_layer(self, layer, x, cos, sin, structure, cache, cache_pos, window):
        return self._run(window, layer, x, cos, sin, cache, cache_pos, *structure)

    def vision_block(self, block, x, cos, sin, structure):
        return self._run(0, block, x, cos, sin, None, None, *structure)


def eager(body):
    """Regions running `body` without compiling (to record the passes' call sites)."""
    return Regions(None, "", body, False, {})
