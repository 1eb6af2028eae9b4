"""The compiled backends ``"cpu"`` and ``"cuda"``: C++/CUDA sweeps from ``csrc/``.

``build`` compiles and loads the libraries, ``ops`` wraps their operators in autograd
functions, ``backend`` adapts them to the dispatch protocol; ``cpu_backend`` and
``cuda_backend`` are the two instances ``fusedrnn.dispatch`` imports.
"""
