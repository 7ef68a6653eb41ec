"""When one of zoo's Gluon kernels (Hopper wgmma code) may run, and how it steps aside.

Gluon's API moves between Triton releases: a kernel that this Triton cannot compile warns once and its portable
twin serves every later call of the process. The interpreter runs no Gluon, and each kernel has an environment
switch (=0: off) for A/B runs.
"""
import os
import warnings

from .pdl import capability


class GluonSwitch:
    def __init__(self, what: str, env: str, instead: str):
        self.what, self.env, self.instead = what, env, instead
        self.failed = []  # the compile error that turned the kernel off in this process, if any

    def on(self, t) -> bool:
        """Whether the kernel may serve tensors on t's device: CUDA sm90, not the interpreter, not turned off."""
        return (not self.failed and t.is_cuda and os.environ.get(self.env, "1") != "0"
                and os.environ.get("TRITON_INTERPRET", "0") != "1" and capability(t)[0] == 9)

    def turn_off(self, error: Exception):
        """This Triton's Gluon does not compile the kernel: say so once, and let its twin serve from now on."""
        if not self.failed:
            warnings.warn(f"zoo: {self.what} does not compile with Triton here ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200]}); {self.instead} runs instead")
        self.failed.append(error)
