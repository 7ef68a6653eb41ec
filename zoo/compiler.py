"""torch.compile with zoo's pass manager, counting the graphs each compiled function produced."""
import functools
from collections import Counter

import torch
from torch._inductor.compile_fx import compile_fx

from compile_passes import ZooPassManager

# Each batch bucket / cache shape / sampling setting is a legitimate specialization of a step function;
# allow more of them than Dynamo's default before it gives up (fullgraph turns that into an error).
for _name in ("recompile_limit", "cache_size_limit"):
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, max(getattr(torch._dynamo.config, _name), 64))


class Compiler:
    def __init__(self, passes=("attention", "rope", "linears")):
        self.manager = ZooPassManager(passes)
        self.graphs = Counter()  # function name -> graphs compiled (1 = never recompiled)

    def __call__(self, fn, name: str, dynamic=False):
        def backend(gm, example_inputs):
            self.manager.current = name
            mark = self.manager.checkpoint()
            try:
                # The graph caches are off so that the passes run (and report) every time; the manager's
                # uuid() keeps them correct for anyone who turns them back on.
                with torch._functorch.config.patch(enable_autograd_cache=False):
                    compiled = compile_fx(gm, example_inputs, config_patches={
                        "joint_custom_pre_pass": self.manager, "fx_graph_cache": False})
            except BaseException:
                # Dynamo may abandon this attempt and trace again (with dynamic=True it restarts once to
                # specialize float constants such as LayerNorm eps): count only the graph that is kept.
                self.manager.rollback(mark)
                raise
            self.graphs[name] += 1
            return compiled
        compiled = torch.compile(fn, backend=backend, fullgraph=True, dynamic=dynamic)
        if dynamic is not True:
            return compiled

        @functools.wraps(fn)
        def without_duck_sizing(*args, **kwargs):
            # Duck sizing would tie dims that happen to be equal in the first call (a video's patches vs one
            # frame's position-embedding taps) and recompile when they differ: give each dim its own symbol.
            with torch.fx.experimental._config.patch(use_duck_shape=False):
                return compiled(*args, **kwargs)
        return without_duck_sizing
