"""The shared kernel: the event model, catalogue, routing, broker topology, settings, logging and storage.

The receiver (``app``), the worker (``tasks``) and the command line (``cli``) import from here; nothing here
imports from them (pyproject.toml's import-linter contracts check it).
"""
