"""The ``"torch"`` backend: PyTorch's own LSTM kernel, the speed floor of ``"auto"``."""
