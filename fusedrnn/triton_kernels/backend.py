"""The ``"triton"`` backend: routes each cell to its Triton sweep (see ``dispatch.py``)."""
from __future__ import annotations

from typing import Optional

from ..sweep import Sweep
from . import common, g2, lstm, mogrifier

#: cell -> module with ``unsupported(sweep)`` and ``run(sweep)``.
CELLS = {
    "lstm": lstm,
    "g2": g2,
    "mogrifier": mogrifier,
}


class TritonBackend:
    name = "triton"
    device_type = "cuda"

    def unavailable(self) -> Optional[str]:
        return common.unavailable_reason()

    def unsupported(self, sweep: Sweep, explicit: bool) -> Optional[str]:
        return common.device_unsupported(sweep.device, sweep.dtype, explicit) or CELLS[sweep.cell].unsupported(sweep)

    def run(self, sweep: Sweep):
        return CELLS[sweep.cell].run(sweep)


backend = TritonBackend()
