import os

import torch
from hypothesis import HealthCheck, settings

# Few threads per worker: CI has 2 cores and runs 2 xdist workers.
torch.set_num_threads(int(os.environ.get("ZOO_TEST_THREADS", "1")))

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
