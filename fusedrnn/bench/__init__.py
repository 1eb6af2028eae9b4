"""The benchmark: ``python -m fusedrnn.bench`` or ``fusedrnn-bench`` (see ``--help``).

Modules: ``grid`` (configurations, presets), ``problem`` (random inputs), ``baselines`` and
``competitors`` (what fusedrnn is compared with), ``implementations`` (one interface over
all of them), ``check`` (SPEC §6 against the float64 reference), ``timing``, ``runner``
(check, then time), ``report`` (table, JSON, chart) and ``cli``.
"""
from .cli import main

__all__ = ["main"]
