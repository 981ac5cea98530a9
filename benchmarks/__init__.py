"""Benchmarks: `python -m benchmarks.throughput` and `python -m benchmarks.warmup_experiment`.

See docs/benchmarks.md for what they measure, the latest numbers and the exact commands.
"""
