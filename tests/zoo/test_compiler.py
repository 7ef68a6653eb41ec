"""zoo/compiler.py: what every graph's Inductor compile is configured with."""
import torch

import zoo.compiler as compiler


def test_inductor_kernels_follow_the_pdl_switch(monkeypatch):
    """Inductor's generated kernels are launched with PDL exactly when zoo's own are: ZOO_PDL (on unless "0")
    reaches compile_fx's config patches as triton.enable_pdl (Inductor emits it on Hopper and later only, so on
    this CPU the compiled function is the same either way)."""
    seen = []
    real = compiler.compile_fx

    def spy(gm, example_inputs, config_patches=None, **kwargs):
        seen.append(config_patches["triton.enable_pdl"])
        return real(gm, example_inputs, config_patches=config_patches, **kwargs)
    monkeypatch.setattr(compiler, "compile_fx", spy)
    for env, want in ((None, True), ("1", True), ("0", False)):
        if env is None:
            monkeypatch.delenv("ZOO_PDL", raising=False)
        else:
            monkeypatch.setenv("ZOO_PDL", env)
        fn = compiler.Compiler(passes=(), cache_dir=False)(lambda x: x * 2 + 1, f"pdl_{env}")
        assert torch.equal(fn(torch.ones(3)), torch.full((3,), 3.0))
        assert seen[-1] is want
