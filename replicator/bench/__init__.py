"""Benchmarks: commands that print throughput as ratios against baselines
measured in the same run. Never timed assertions in tests."""
