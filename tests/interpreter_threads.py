"""The Triton interpreter with every program of a launch in its own thread, so that the
persistent sweeps' multi-program paths (several programs meeting at grid barriers) run on a CPU.

The interpreter runs a grid's programs one after another: a grid barrier with more than one
program would wait forever, so without this only single-program layouts run on a CPU. Here the
programs run together, as a cooperative launch makes them resident together on a GPU; the
barrier's atomics are the interpreter's, each one call under the GIL. Two places of the
interpreter change, both alike from Triton 3.3 to 3.9 (run on 3.7.1 and 3.9.0): the current
program index is kept per thread, and ``GridExecutor`` calls, in place of the kernel, a function
that starts the program's thread (the launch's last program then waits for all of them).
"""
import contextlib
import inspect
import random
import sys
import threading
import time

import triton.language as tl  # noqa: F401 - the interpreter patches the tl its kernel function sees
from triton.runtime import interpreter


@contextlib.contextmanager
def concurrent_programs(timeout_s: float = 60.0, seed: int = 0):
    """Within it, interpreted launches run their programs concurrently; a launch whose programs
    are still running after ``timeout_s`` (a barrier that never opens) raises ``TimeoutError``,
    and its threads stop at their next atomic operation.

    Half the programs of a launch, drawn from ``seed``, are late: half their stores wait up to
    20 ms, so that a read that misses its barrier tends to see stale data. Races stay a matter
    of chance. Planted in the kernels, a barrier opening one arrival early failed 31 of the 32
    LSTM cases of test_triton.py (forward) and 28 (backward), and 4 of the 8 Mogrifier cases of
    test_triton_mogrifier.py (its round barriers); the Mogrifier backward's d_h adds moved to
    other programs than their readers failed 3 of the 8."""
    builder = interpreter.interpreter_builder
    builder_type, local, stop = type(builder), threading.local(), threading.Event()
    run_grid = interpreter.GridExecutor.__call__
    atomic_rmw, masked_store, jitter = builder.create_atomic_rmw, builder.create_masked_store, random.Random(seed)

    def stoppable_atomic_rmw(*args):
        if stop.is_set():
            raise TimeoutError("stopped: the launch ran past its time limit")
        return atomic_rmw(*args)

    def store(*args):  # a late program's stores wait: a reader that misses a barrier reads stale data
        if local.late and jitter.random() < 0.5:
            time.sleep(jitter.random() * 2e-2)
        return masked_store(*args)

    def run_grid_in_threads(executor, *args, **kwargs):
        kernel, threads, errors = executor.fn, [], []

        def start_program(**arguments):
            index = builder.grid_idx

            def program():
                builder.set_grid_idx(*index)
                local.late = jitter.random() < 0.5
                try:
                    kernel(**arguments)
                except BaseException as error:  # noqa: BLE001 - re-raised by the launch
                    errors.append(error)

            threads.append(threading.Thread(target=program, daemon=True))
            threads[-1].start()
            if index == tuple(size - 1 for size in builder.grid_dim):
                for thread in threads:
                    thread.join(timeout_s)
                if any(thread.is_alive() for thread in threads):
                    stop.set()
                    raise TimeoutError(f"{len(threads)} programs still running after {timeout_s} s: a grid barrier "
                                       "that never opens?")
                if errors:
                    raise errors[0]

        start_program.__signature__ = inspect.signature(kernel)  # the launch binds the kernel's arguments to it
        executor.fn = start_program
        try:
            return run_grid(executor, *args, **kwargs)
        finally:
            executor.fn = kernel

    switch_interval = sys.getswitchinterval()
    builder_type.grid_idx = property(lambda self: getattr(local, "index", None),
                                     lambda self, index: setattr(local, "index", index))
    builder.create_atomic_rmw, builder.create_masked_store = stoppable_atomic_rmw, store
    interpreter.GridExecutor.__call__ = run_grid_in_threads
    sys.setswitchinterval(1e-4)  # programs spinning at a barrier hand over the GIL sooner
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        interpreter.GridExecutor.__call__ = run_grid
        del builder.create_atomic_rmw, builder.create_masked_store
        del builder_type.grid_idx
