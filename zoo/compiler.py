"""torch.compile with zoo's pass manager, counting the graphs each compiled function produced, with Inductor's
persistent caches in zoo's cache directory (zoo/cache.py): a second process loads the compiled graphs instead of
compiling them, and the passes' record of each graph is read back so zoo.explain reports the same.

Every compiled function gets a code object of its own. Dynamo keeps its cache (and its recompile budget) on
code objects, so without this every model instance, batch bucket and mode compiled from the same method would
share one cache: a second model would "recompile" the first one's graphs, trace its float constants (a softmax
scale) as tensors, and exhaust the budget. With one code object per function, each function's graph count is
exactly its number of true recompiles, and no process-wide Dynamo limit has to be raised.
"""
import functools
import itertools
import logging
import sys
import time
import types
from collections import Counter, defaultdict

import torch
from torch._inductor.compile_fx import compile_fx

from compile_passes import ZooPassManager
from compile_passes.kernels.pdl import pdl_wanted

from .cache import PassRecords, graph_key, inductor_cache_dir, resolve_cache_dir

log = logging.getLogger("zoo")


_serial = itertools.count()


def _own_code(fn, name: str):
    """A function calling `fn` whose code object belongs to it alone. Dynamo keeps its cache on the code object
    and its automatic-dynamic memory under (file, line, co_name): the name is made unique too, or a second model's
    function would inherit what the first one's saw (a float constant seen to change is traced as a tensor)."""
    def call(*args, **kwargs):
        return fn(*args, **kwargs)
    code = call.__code__.replace(co_name=f"zoo_{name}_{next(_serial)}")
    return types.FunctionType(code, call.__globals__, code.co_name, call.__defaults__, call.__closure__)


def _progress(name: str):
    """A one-step bar per graph ("zoo: compiling prefill[b=8]", then its time) in terminals and notebooks; nothing
    when stderr is a pipe or file (CI logs keep the logging line instead)."""
    from tqdm.auto import tqdm
    shown = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=1, desc=f"zoo: compiling {name}", bar_format="{desc} ({elapsed})", disable=not shown)


class Compiler:
    def __init__(self, passes=("attention", "rope", "linears"), cache_dir=None):
        self.manager = ZooPassManager(passes)
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.records = PassRecords(self.cache_dir) if self.cache_dir is not None else None
        self.graphs = Counter()  # function name -> graphs compiled (1 = never recompiled)
        self.seconds = Counter()  # function name -> seconds Inductor spent on its graphs (compile or cache load)
        self.call_seconds = Counter()  # function name -> seconds of the calls that made a graph (+ Dynamo tracing)
        self.from_cache = {}  # function name -> its last graph came from the persistent cache
        self.sites = defaultdict(Counter)  # function name -> (pass, layer site) -> sites its graphs replaced
        self.serves = defaultdict(set)  # region function name -> the layers it ran for (zoo/regions.py)

    def __call__(self, fn, name: str, dynamic=False):
        def backend(gm, example_inputs):
            self.manager.current = name
            mark = self.manager.checkpoint()
            start = time.perf_counter()
            caching = self.cache_dir is not None
            bar = _progress(name)
            try:
                with inductor_cache_dir(self.cache_dir), torch._functorch.config.patch(enable_autograd_cache=caching):
                    compiled = compile_fx(gm, example_inputs, config_patches={
                        "joint_custom_pre_pass": self.manager, "fx_graph_cache": caching,
                        # Inductor's kernels launched with PDL as zoo's own (compile_passes/kernels/pdl.py): each
                        # waits for its inputs' writer on the GPU, its launch overlaps the previous kernel's tail
                        # (Inductor generates it on Hopper and later only; ZOO_PDL=0 turns both off)
                        "triton.enable_pdl": pdl_wanted()})
            except BaseException:
                # Dynamo may abandon this attempt and trace again (with dynamic=True it restarts once to
                # specialize float constants such as LayerNorm eps): count only the graph that is kept.
                self.manager.rollback(mark)
                bar.close()
                raise
            hit = self._record(gm, name, mark)
            seconds = time.perf_counter() - start
            self.graphs[name] += 1
            self.seconds[name] += seconds
            self.from_cache[name] = hit
            log.info("zoo: compiled %s (graph %d) in %.1f s%s", name, self.graphs[name], seconds,
                     " (from the cache)" if hit else "")
            bar.set_description_str(f"zoo: {name} {'loaded from the cache' if hit else 'compiled'}")
            bar.update()
            bar.close()
            return compiled
        compiled = torch.compile(_own_code(fn, name), backend=backend, fullgraph=True, dynamic=dynamic)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            # the host time of a call that made a graph: Dynamo's tracing + the backend above + launching it
            n, start = self.graphs[name], time.perf_counter()
            if dynamic is True:
                # Duck sizing would tie dims that happen to be equal in the first call (a video's patches vs one
                # frame's position-embedding taps) and recompile when they differ: give each dim its own symbol.
                # Floats read off modules (nn.Embedding's norm_type, eps) are constants: traced as symbols, Dynamo
                # specializes them late and restarts the whole trace (each dynamic graph traced twice).
                with torch.fx.experimental._config.patch(use_duck_shape=False), \
                        torch._dynamo.config.patch(specialize_float=True):
                    out = compiled(*args, **kwargs)
            else:
                out = compiled(*args, **kwargs)
            if self.graphs[name] > n:
                self.call_seconds[name] += time.perf_counter() - start
            return out
        return timed

    def _record(self, gm, name, mark) -> bool:
        """Store what the passes did to this graph, or (a cache hit: they did not run) read it back. -> hit."""
        n_log, sites_before = mark
        if len(self.manager.log) > n_log:  # the passes ran: a cold compile
            sites = self.manager.sites - sites_before
            self.sites[name].update(sites)
            if self.records is not None:
                self.records.save(graph_key(gm, self.manager.uuid()), self.manager.log[-1][1], sites)
            return False
        record = self.records.load(graph_key(gm, self.manager.uuid()))
        if record is None:  # artifacts from elsewhere (another tool's cache): the passes' work is unknown
            log.warning("zoo: %s came from the compile cache without zoo's record of its passes", name)
            self.manager.log.append((name, {"unknown (cache hit without a record)": 0}))
            return True
        counts, sites = record
        self.manager.log.append((name, counts))
        self.manager.sites.update(sites)
        self.sites[name].update(sites)
        return True
