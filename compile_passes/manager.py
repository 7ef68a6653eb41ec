"""The pass manager: one Inductor CustomGraphPass that runs zoo's passes in order and records what each did.

Installed as `joint_custom_pre_pass` (it also runs for inference graphs, and there `aten.view` still
matches; after `view_to_reshape` in the post-grad hooks it would not). `uuid()` hashes the pass files,
the zoo_ref functions the patterns come from, the enabled passes and the registered layouts, so Inductor's
FX graph cache can never serve a graph compiled with other passes.
"""
import hashlib
import sys
from collections import Counter
from pathlib import Path

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from zoo_ref.errors import InputError

from .attention import attention_replacements
from .epilogues import gelu_epilogue_replacements
from .gemv_fusion import drop_dead_views, fold_residuals, gemv_fusion_replacements
from .linears import few_rows_mms, merge_sibling_mms, one_row_gemvs
from .patterns import record_call_sites, site_of
from .rope import fold_cache_writes, pair_qk, rope_replacements
from .windows import attend_by_window, masks_left

PASSES = {"attention": attention_replacements, "rope": rope_replacements,
          # a GELU epilogue pattern; then (not patterns) merging mm's whose weights zoo packed, one-row GEMVs
          "linears": gelu_epilogue_replacements}
aten = torch.ops.aten
_ROOT = Path(__file__).resolve().parents[1]
_FILES = tuple(str(p) for p in [*sorted((_ROOT / "compile_passes").glob("*.py")), _ROOT / "zoo_ref/layers.py",
                                _ROOT / "zoo_ref/decoder.py", _ROOT / "zoo_ref/deepseek/mla.py"])


class ZooPassManager(CustomGraphPass):
    def __init__(self, passes=("attention", "rope")):
        unknown = set(passes) - set(PASSES)
        if unknown:
            raise InputError(f"unknown pass(es) {sorted(unknown)}; available: {sorted(PASSES)}")
        self.names = tuple(passes)
        self.replacements = [r for name in self.names for r in PASSES[name]()]
        # after the one-row GEMVs exist: their RMSNorm / SwiGLU prologues
        self.gemv_fusions = gemv_fusion_replacements() if "linears" in self.names else []
        self.log = []  # one entry per graph this manager ran on: (graph name, {pass name: sites replaced})
        self.current = "?"  # name of the graph being compiled (set by zoo.compiler)
        self.sites = Counter()  # (replacement name, layer site) -> count

    def record_call_sites(self):
        """Context manager: run the model inside it once to register patterns for its call sites."""
        return record_call_sites(self.replacements)

    def __call__(self, graph: torch.fx.Graph) -> None:
        drop_full_slices(graph)
        counts = {}
        for rep in self.replacements:
            counts[rep.name] = rep.apply(graph)
            if rep.name != "rope":
                self.sites.update((rep.name, site) for site in rep.replaced_sites)
        if "attention" in self.names:  # attention over a token window: the window replaces the mask
            windowed = attend_by_window(graph)
            counts["attention_window"] = len(windowed)
            # ... of which over packed tokens' own cache rows, read in place (latent.fold_row_gathers)
            counts["attention_rows"] = sum(len(n.args) > 7 for n in windowed
                                           if n.target is torch.ops.zoo.mla_window_attention.default)
            self.sites.update(("attention_window", site_of(n)) for n in windowed)
        counts["masks_built"] = masks_left(graph)  # window masks still materialized (0 once attention ran)
        if "rope" in self.names:
            counts["rope"] = pair_qk(graph)  # q+k pairs fused into one in-place kernel
            writes = fold_cache_writes(graph)  # ... which then writes k and v into the caches itself
            counts["rope_cache"] = len(writes)
            self.sites.update(("rope_cache", site) for site in writes)
            counts["rope_unpaired"] = 0
            for node in graph.nodes:
                kind = _kernel_kind(node)
                if kind in ("rope", "rope_unpaired"):
                    self.sites[(kind, site_of(node))] += 1
                    counts["rope_unpaired"] += kind == "rope_unpaired"
        if "linears" in self.names:
            merged = merge_sibling_mms(graph)
            counts["linears"] = len(merged)
            self.sites.update(("linears", site) for site in merged)
            gemvs = one_row_gemvs(graph)
            counts["gemv"] = len(gemvs)
            self.sites.update(("gemv", site) for site in gemvs)
            if gemvs:
                drop_dead_views(graph)
                for rep in self.gemv_fusions:
                    counts[rep.name] = counts.get(rep.name, 0) + rep.apply(graph)
                    self.sites.update((rep.name, site) for site in rep.replaced_sites)
                residuals = fold_residuals(graph)
                counts["gemv_residual"] = len(residuals)
                self.sites.update(("gemv_residual", site) for site in residuals)
            few = few_rows_mms(graph)
            counts["few_rows_mm"] = len(few)
            self.sites.update(("few_rows_mm", site) for site in few)
        self.log.append((self.current, counts))

    def checkpoint(self):
        return len(self.log), Counter(self.sites)

    def rollback(self, mark):
        """Forget what was recorded since `checkpoint()` (a compile attempt that was abandoned)."""
        n, sites = mark
        del self.log[n:]
        self.sites = sites

    def uuid(self):
        h = hashlib.sha256(get_hash_for_files(_FILES))
        h.update("|".join(self.names).encode())
        for rep in self.replacements + self.gemv_fusions:
            h.update(repr(sorted(map(str, rep.keys))).encode())
        return h.hexdigest()


def drop_full_slices(graph: torch.fx.Graph) -> int:
    """Remove `x[:, :]`-style slices (start 0, end past any size, step 1): the tensor itself. The patterns are traced
    on concrete examples, where such slices vanish; in a dynamic graph they stay whenever the symbolic shapes do not
    let Dynamo prove them whole (zoo_ref's sliding_mask indexes `j[None, :]`), and a pattern would then not match."""
    dropped = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is aten.slice.Tensor and not node.kwargs:
            # aten.slice.Tensor(self, dim=0, start=None, end=None, step=1)
            x, _, start, end, step = (*node.args, *(0, None, None, 1)[len(node.args) - 1:])
            if start in (0, None) and (end is None or (isinstance(end, int) and end >= sys.maxsize)) and step == 1:
                node.replace_all_uses_with(x)
                graph.erase_node(node)
                dropped += 1
    return dropped


def _kernel_kind(node):
    """Which pass put this node there (None for everything else)."""
    if node.op != "call_function":
        return None
    if node.target in (torch.ops.zoo.rotary.default, torch.ops.zoo.norm_rotary.default):
        return "rope_unpaired"
    if node.target in (torch.ops.zoo.rope_pair.default, torch.ops.zoo.norm_rope_pair.default):
        return "rope"
    if "auto_functionalized" in str(node.target) and node.args and \
            node.args[0] in (torch.ops.zoo.rope_.default, torch.ops.zoo.norm_rope_cache_.default):
        return "rope"
    return None
