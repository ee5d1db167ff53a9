"""Benchmarks (not part of the test suite). Each writes its results to docs/benchmarks.md."""
