"""The benchmark: ``python -m fusedrnn.bench`` or ``fusedrnn-bench`` (see ``--help``).

Modules: ``problem`` (random inputs) and ``check`` (SPEC §6 against the float64 reference),
``implementations`` (fusedrnn's backends and the baselines), ``measure`` (one case, checked
and timed), ``report`` (table, JSON, chart) and ``cli`` (grids and the command).
"""
from .cli import main

__all__ = ["main"]
