"""The benchmark, ``python -m fusedrnn.bench`` (``--help``): ``cli`` (grids, the command), ``implementations``
(fusedrnn's backends, the baselines), ``measure`` (one case, checked and timed), ``report`` (machine, table,
chart, a results file's times)."""
from .cli import main

__all__ = ["main"]
