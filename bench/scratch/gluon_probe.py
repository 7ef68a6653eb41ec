"""Probe: Gluon MLA split-KV, graphed totals per n_splits, main kernel alone and merge alone (graphed)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import compile_passes.kernels.mla_latent_gluon as mg  # noqa: E402
from bench.attention import graphed_ms  # noqa: E402
from bench.mla_kernel import SCALE, inputs  # noqa: E402
from compile_passes.kernels.mla_latent import mla_latent_triton  # noqa: E402
from compile_passes.kernels.splitk import merge_splits_into  # noqa: E402

real_merge = mg.merge_splits_into
saved = {}


def keep(out, o, lse, t, active):
    saved.update(o=o, lse=lse, active=active, out=out, t=t)


for b, hist, s, splits in [(1, 32768, 32832, [None, 44]), (16, 400, 1024, [None, 1]),
                           (1, 128, 32768, [None, 1]), (16, 4096, 4160, [None]), (64, 4096, 4160, [None]),
                           (128, 4096, 4160, [None])]:
    q_lat, q_pe, kv, pe, start, lens = inputs(b, 1, hist, s)
    tri = 1e3 * graphed_ms(lambda: mla_latent_triton(q_lat, q_pe, kv, pe, start, lens, SCALE))
    print(f"B={b} hist={hist}: triton {tri:.1f} us", flush=True)
    for n, pf in [(n, pf) for n in splits for pf in (0, 1, 2)]:
        mg.merge_splits_into = real_merge
        us = 1e3 * graphed_ms(lambda: mg.mla_latent_gluon(q_lat, q_pe, kv, pe, start, lens, SCALE, n_splits=n,
                                                          prefetch=pf))
        mg.merge_splits_into = keep
        saved.clear()
        main = 1e3 * graphed_ms(lambda: mg.mla_latent_gluon(q_lat, q_pe, kv, pe, start, lens, SCALE, n_splits=n,
                                                            prefetch=pf))
        merge = (1e3 * graphed_ms(lambda: merge_splits_into(saved["out"], saved["o"], saved["lse"], saved["t"],
                                                            saved["active"])) if saved else 0.0)
        print(f"   gluon prefetch={pf} splits={n}: {us:.1f} us (main alone {main:.1f}, merge alone {merge:.1f})",
              flush=True)
mg.merge_splits_into = real_merge
