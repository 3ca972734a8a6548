"""Benchmarks: ``python -m benchmarks`` (or ``nox -s bench``). See docs/performance.md."""
