import os

# Triton kernels run on CPU tensors in the interpreter. Must be set before anything imports triton (its
# language helpers are built for the mode in force at import; Inductor imports triton early).
os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("ZOO_TEST_CUDA") else "1")

# One compile cache for the whole run, shared by the xdist workers (graphs compiled by one module load in the
# next); never the user's own ~/.cache/zoo. Pass records make zoo.explain identical on a hit.
if "ZOO_CACHE_DIR" not in os.environ:
    import tempfile
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    os.environ["ZOO_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"zoo-test-cache-{run_id}")

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Few threads per worker: CI has 2 cores and runs 2 xdist workers.
torch.set_num_threads(int(os.environ.get("ZOO_TEST_THREADS", "1")))

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
