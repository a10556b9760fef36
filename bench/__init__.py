"""NanoLens benchmarks (`make bench`): figures are medians and same-run ratios, never test asserts."""
