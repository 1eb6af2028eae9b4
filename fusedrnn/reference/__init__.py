"""Plain-PyTorch cells: the ground truth every other backend is tested against."""
from .g2 import g2_lstm
from .gates import input_forget_gates
from .lstm import lstm
from .mogrifier import mogrifier_lstm

__all__ = ["lstm", "mogrifier_lstm", "g2_lstm", "input_forget_gates"]
