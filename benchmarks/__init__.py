"""Benchmarks: scripts that measure speed and accuracy; results in benchmarks/results/."""
