"""Benchmarks for asgi_rt: ``python -m bench.fanout`` and ``python -m bench.memory``."""
