"""Benchmarks: ingest (bench/ingest.py), end to end (bench/end_to_end.py), memory (bench/memory.py).

Run each from the repository root as ``python -m bench.<name>``; ``--quick`` is the CI-sized run.
BENCHMARKS.md keeps the latest figures and the commands that produced them.
"""
