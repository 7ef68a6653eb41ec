"""Hand-written CUDA-graph capture (nano-vllm / SGLang style): one graph per key (batch bucket, sampling
params, cache), captured on first use after a warm-up run, all sharing one memory pool.

A graph's inputs and outputs are static buffers (the cache, a DecodeState): callers write inputs into
them before `run` and read the returned output tensor, which the next replay overwrites.
"""
import torch
from torch import nn

# Prompts up to this length prefill through a CUDA graph per power-of-two length (their launches, ~1000 for a
# 28-layer decoder, would cost more host time than the device needs); longer ones amortize their launches.
GRAPH_MAX_T = 1024


def length_bucket(n: int) -> int:
    """The power-of-two length (at least 2: Dynamo would specialize a length of 1) that n tokens are padded to."""
    return 1 << max(1, (n - 1).bit_length())


def packed_bucket(n: int) -> int:
    """The token count n packed tokens are padded to: a multiple of a sixteenth of n's octave (at least 16), so the
    padding stays under ~6% (every padding token costs its share of the projections) and a workload's sizes share
    a few graphs."""
    step = max(16, 1 << max(0, (n - 1).bit_length() - 5))
    return -(-n // step) * step


class StaticBuffers(nn.Module):
    """Named tensors at fixed addresses: a captured graph's inputs, outputs and state."""

    def __init__(self, **tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.clone(), persistent=False)


class GraphRunner:
    def __init__(self, warmup=2):
        self.graphs = {}
        self.inputs = {}  # key -> StaticBuffers: the graph's inputs that run_static copies in
        self.pool = None
        self.warmup = warmup

    def __len__(self):
        return len(self.graphs)

    def run(self, key, fn, *args, state=None):
        """Replay the graph for `key` (capturing `fn(*args)` first if new). `state`: a module whose buffers the
        step advances; they are restored after the warm-up runs so capture leaves no trace."""
        if key not in self.graphs:
            self.graphs[key] = self._capture(fn, args, state if state is not None else args[-1])
        graph, out = self.graphs[key]
        graph.replay()
        return out

    def run_static(self, key, fn, *args, **inputs):
        """run(key, fn, *args, *inputs) with the tensors `inputs` copied into buffers held for `key` (made from the
        first call's: same shapes every call); `args` are static already (a cache, a memoized layout)."""
        static = self.inputs.get(key)
        if static is None:
            static = self.inputs[key] = StaticBuffers(**inputs)
        else:
            for name, value in inputs.items():
                getattr(static, name).copy_(value)
        return self.run(key, fn, *args, *(getattr(static, name) for name in inputs), state=static)

    def drop(self, key):
        self.graphs.pop(key, None)
        self.inputs.pop(key, None)
        if not self.graphs:  # the pool dies with the last graph that used it
            self.pool = None

    def _capture(self, fn, args, state):
        saved = [(buf, buf.clone()) for buf in state.buffers()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):  # compiles, autotunes, allocates; then undo the step
                fn(*args)
                for buf, old in saved:
                    buf.copy_(old)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn(*args)
        if self.pool is None:
            self.pool = graph.pool()
        return graph, out
