"""Benchmarks: each ``bench/bench_*.py`` module has a ``run()`` that prints its figures as ratios
against a named peer measured in the same process and run."""
