"""zoo_ref: readable reference models (the correctness oracle). No optimizations live here."""
