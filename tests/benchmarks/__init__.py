"""Benchmarks on the real broker (``make bench``); never part of ``make test``."""
