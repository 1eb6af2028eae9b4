"""fusedrnn: fused kernels for LSTM, Mogrifier LSTM and G2-LSTM."""
from . import functional
from .dispatch import BACKENDS, BackendUnavailableError, available_backends
from .modules import LSTM, G2LSTM, MogrifierLSTM
from .noise import sample_noise

__version__ = "0.1.0"
__all__ = ["LSTM", "MogrifierLSTM", "G2LSTM", "functional", "sample_noise", "available_backends", "BACKENDS",
           "BackendUnavailableError"]
