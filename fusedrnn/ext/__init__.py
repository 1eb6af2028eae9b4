"""The compiled backends ``"cpu"`` and ``"cuda"``: C++/CUDA sweeps from ``csrc/``.

``build`` compiles and loads the libraries, ``ops`` registers their operators' fake
implementations and autograd, ``backend`` adapts them to the dispatch protocol; ``cpu_backend`` and
``cuda_backend`` are the two instances ``fusedrnn.dispatch`` imports.
"""
