"""Searching for violations: trace generation (fuzzgen, gen, elfimage), fuzz campaigns and their engines
(campaign; the atheris worker, atheris_target), minimization, exhaustive checking (check) and the design
variants to try (variants)."""
