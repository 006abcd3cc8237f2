"""Benchmark scripts for tf_groupsparse; each writes JSON + markdown to benchmarks/results/."""
