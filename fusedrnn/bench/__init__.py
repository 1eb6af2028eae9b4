"""The benchmark, ``python -m fusedrnn.bench`` or ``fusedrnn-bench`` (see ``--help``): ``cli`` (grids and
the command), ``implementations`` (fusedrnn's backends and the baselines), ``measure`` (one case, checked
and timed), ``report`` (machine info, table, chart)."""
from .cli import main

__all__ = ["main"]
