"""zoo.explain(compiled): what the passes replaced, per pass and per layer, graphs compiled, CUDA graphs."""
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Report:
    counts: dict  # pass name -> sites replaced in the graph that saw the most (one full model step)
    sites: dict  # pass name -> {layer: replacements summed over all graphs}
    graphs: dict  # compiled function -> graphs compiled (1 = no recompiles)
    graph_breaks: int
    cuda_graphs: int  # captured CUDA graphs (0 on CPU)
    regions: dict = field(default_factory=dict)  # compiled layer region -> layers it ran for (zoo/regions.py)
    per_graph: list = field(default_factory=list)
    compile_seconds: dict = field(default_factory=dict)  # compiled function -> seconds in Inductor (or its cache)
    # compiled function -> host seconds of its graph-making calls outside Inductor: Dynamo tracing (and the run)
    trace_seconds: dict = field(default_factory=dict)
    from_cache: dict = field(default_factory=dict)  # compiled function -> loaded from the persistent cache
    cache_dir: str | None = None
    encoder_cache: dict | None = None  # Qwen3-VL: {"hits", "misses", "bytes", "entries"} of the vision feature cache
    prefix_cache: dict | None = None  # decoders: {"hits", "reused_tokens", "prefilled_tokens"} over generates

    def __str__(self):
        lines = ["zoo.explain", "", "pass                    sites (max over graphs)"]
        lines += [f"  {name:<22}{n}" for name, n in self.counts.items()]
        lines += ["", "sites by layer (summed over graphs):"]
        for name, layers in self.sites.items():
            keys = sorted(layers, key=lambda s: (s.split(".")[0], int(s.split(".")[1]) if "." in s else -1))
            lines.append(f"  {name}: " + ", ".join(f"{k}x{layers[k]}" for k in keys))
        lines += ["", "compiled functions (graphs compiled; more than 1 = recompiles), seconds tracing + compiling, "
                      "source:"]
        for name, n in self.graphs.items():
            source = "cache" if self.from_cache.get(name) else "compiled"
            lines.append(f"  {name:<22}{n}  {self.trace_seconds.get(name, 0):6.1f} s + "
                         f"{self.compile_seconds.get(name, 0):5.1f} s  {source}")
        if self.regions:
            lines += ["layer regions (one layer's graph, run for every layer): " +
                      ", ".join(f"{name} x{n}" for name, n in self.regions.items())]
        lines += [f"compile cache: {self.cache_dir or 'off'}"]
        if self.encoder_cache is not None:
            lines += [f"vision feature cache: {self.encoder_cache}"]
        if self.prefix_cache is not None:
            lines += [f"conversation prefix reuse: {self.prefix_cache}"]
        lines += ["", f"graph breaks: {self.graph_breaks} (fullgraph=True: a break is an error)",
                  f"CUDA graphs live: {self.cuda_graphs}"]
        return "\n".join(lines)


def explain(compiled) -> Report:
    manager = compiled.compiler.manager
    counts = defaultdict(int)
    for _, log in manager.log:
        for name, n in log.items():
            counts[name] = max(counts[name], n)
    c = compiled.compiler
    sites = defaultdict(lambda: defaultdict(int))
    for fn, replaced in c.sites.items():
        for (name, site), n in replaced.items():
            # a region's graph (one layer, no layer index in it) counts for every layer it ran for
            for layer in (c.serves[fn] if site == "-" and c.serves.get(fn) else (site,)):
                sites[name][layer] += n
    sites = {name: dict(sorted(layers.items())) for name, layers in sorted(sites.items())}
    graphs = compiled.graphs
    return Report(counts=dict(counts), sites=sites, regions={k: len(v) for k, v in c.serves.items()},
                  graphs=dict(c.graphs), graph_breaks=0,
                  cuda_graphs=len(graphs) if graphs is not None else 0, per_graph=list(manager.log),
                  compile_seconds=dict(c.seconds), from_cache=dict(c.from_cache),
                  trace_seconds={k: max(0.0, v - c.seconds[k]) for k, v in c.call_seconds.items()},
                  cache_dir=str(c.cache_dir) if c.cache_dir is not None else None,
                  encoder_cache=cache.stats() if (cache := getattr(compiled, "encoder_cache", None)) else None,
                  prefix_cache=dict(prefix.stats) if (prefix := getattr(compiled, "prefix", None)) else None)
