"""What the receiver's and the workers' metrics share: where multiprocess files go, the event_type label."""

from __future__ import annotations

from kernel.catalogue import CATALOGUE

#: prometheus-client's multiprocess mode: the directory each process writes its metric files in.
DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def event_type_label(code: object) -> str:
    """The ``event_type`` label of ``code``: the code when the catalogue knows it, else ``other``.

    Codes come from the request body, so unknown ones share one label (``none`` when there is no code):
    a bad batch cannot create unbounded series.
    """
    if not isinstance(code, str) or not code:
        return "none"
    return code if code in CATALOGUE else "other"
