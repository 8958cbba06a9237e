"""Performance benchmark: `python -m recbench.bench` (see __main__.py and benchmarks/README.md)."""
