"""Programmatic dependent launch (PDL, Hopper and later) for zoo's kernels.

A decode step is a chain of small kernels (a batch-1 Qwen3-VL step: ~200, most of them ours), and between two of
them the GPU drains the first and then launches and ramps up the second: ~1-2 us each. Launched with PDL, a kernel's
programs may be scheduled while the kernel before it is still finishing; each program first waits
(griddepcontrol.wait) until that kernel has completed and its writes are visible, and only then reads or writes
memory. Stream order is kept exactly (every read and write of the kernel happens after the previous kernel is done,
and that one waited for its own predecessor), only the launch latency and the ramp overlap the previous tail.
Right after its wait a program lets the next kernel launch (griddepcontrol.launch_dependents): that kernel's
programs can then take the slots this one frees. Inside a CUDA graph capture the launches become programmatic
edges. ZOO_PDL=0 launches the classic way (for A/B runs); CPU, the Triton interpreter and pre-Hopper GPUs never use it.
"""
import functools
import os

import torch
import triton
import triton.language as tl


@triton.jit
def wait_for_inputs(USE_PDL: tl.constexpr):
    """A kernel's first statement: with PDL, wait for the previous kernel, then let the next one launch."""
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@functools.cache
def _capability(index: int) -> tuple:
    return torch.cuda.get_device_capability(index)


def capability(t: torch.Tensor) -> tuple:
    """(major, minor) compute capability of the CUDA device t lives on (looked up once per device)."""
    return _capability(t.device.index if t.device.index is not None else torch.cuda.current_device())


def pdl_wanted() -> bool:
    """ZOO_PDL: on unless "0" (zoo's kernels here, and Inductor's through zoo/compiler.py)."""
    return os.environ.get("ZOO_PDL", "1") != "0"


def pdl_launch(t: torch.Tensor) -> dict:
    """The launch arguments for a kernel that starts with wait_for_inputs and runs on t's device."""
    on = (t.device.type == "cuda" and pdl_wanted()
          and os.environ.get("TRITON_INTERPRET", "0") != "1" and capability(t)[0] >= 9)
    return {"USE_PDL": True, "launch_pdl": True} if on else {"USE_PDL": False}
