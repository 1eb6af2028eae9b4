"""Compiles the sweep kernels (LSTM/G2, Mogrifier) for an NVIDIA GPU without one (Triton ships ``ptxas``).

The interpreter accepts code that the GPU compiler rejects (e.g. non-constexpr
globals), so CPU-only CI compiles the kernels here too; and the resources it reports
(registers, spills, shared memory) are what the launch heuristic in ``common.py`` is
calibrated against.

Example:
    >>> config = layout.SweepConfig(block_b=16, block_h=16, hidden_pad=256, programs_h=16, programs_b=1)
    >>> compile_lstm(config, torch.bfloat16)["forward"]
    Resources(shared_bytes=40960, registers=..., spill_bytes=0, spills_in_loops=0, element_loads=...)
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..noise import EPS
from . import common, layout, lstm, mogrifier
from .lstm import NOISE_PHILOX, NOISE_TENSOR

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Resources:
    """What one compiled kernel takes per program."""

    shared_bytes: int
    registers: int
    spill_bytes: int  # the stack frame: values ptxas keeps in local memory
    spills_in_loops: int  # local-memory loads and stores inside a loop of the machine code: spills paid per step
    element_loads: int  # global loads (or asynchronous copies) of at most 2 bytes in the PTX


def _element_loads(ptx: str) -> int:
    """Loads of one 16-bit (or narrower) element: what rows that cannot be proven aligned load as."""
    loads = re.findall(r"\bld\.global[\w.:]*\.[bsuf](?:8|16)\b", ptx)
    copies = re.findall(r"\bcp\.async\.\w+\.shared\.global[^;]*\], (0x[0-9a-f]+|\d+)", ptx)
    return len(loads) + sum(int(size, 0) <= 2 for size in copies)


def _pointer(dtype, present=True):
    """A pointer argument's signature, or ``constexpr`` where the launch passes ``None``."""
    return f"*{_TYPES.get(dtype, dtype)}" if present else "constexpr"


def lstm_kernels(dtype, noise=NOISE_PHILOX.value, hard_gates=False, lengths=True, save=True, reverse=False):
    """``(kernel, signature, flags)`` of the LSTM/G2 forward and backward as ``lstm_fwd`` and
    ``lstm_bwd`` launch them (``noise``: the value of one of ``lstm``'s ``NOISE_*``); the
    defaults are the variant with the most work."""
    t, f32 = dtype, torch.float32
    forward = dict(gx=_pointer(t), w_hh=_pointer(t), h0=_pointer(t), c0=_pointer(t),
                   lengths=_pointer("i64", lengths), noise=_pointer(f32, noise == NOISE_TENSOR.value),
                   seed=_pointer("i64", noise == NOISE_PHILOX.value), states=_pointer(t), out=_pointer(t),
                   cells=_pointer(f32, save), gates=_pointer(t, save), h_n=_pointer(t),
                   c_n=_pointer(t),
                   counters="*i32", T="i32", B="i32", H="i32", inv_temperature="fp32", noise_prob="fp32")
    backward = dict(w_hh=_pointer(t), gates=_pointer(t), cells="*fp32", c0="*fp32",
                    lengths=_pointer("i64", lengths),
                    d_out=_pointer(t), d_h_n=_pointer(t), d_c_n=_pointer(t), dz=_pointer(t), d_h0="*fp32",
                    d_c0="*fp32", counters="*i32", T="i32", B="i32", H="i32", inv_temperature="fp32")
    forward_flags = dict(REVERSE=reverse, HARD_GATES=hard_gates, HAS_LENGTHS=lengths, SAVE=save, NOISE=noise, EPS=EPS)
    backward_flags = dict(REVERSE=reverse, HAS_LENGTHS=lengths)
    return ((lstm._lstm_fwd_kernel, forward, forward_flags), (lstm._lstm_bwd_kernel, backward, backward_flags))


def mogrifier_kernels(dtype, rounds, low_rank=0, lengths=True, bias=True, round_bias=True, save=True, reverse=False,
                      hidden_size=256):
    """Likewise for the Mogrifier as ``mogrifier_fwd`` and ``mogrifier_bwd`` launch it with ``rounds``
    rounds, ``low_rank`` the :func:`mogrifier.low_rank_mask` of those that are low rank, and
    ``I = H = hidden_size`` over 16 rows, of rank 16 if any (which decide :func:`mogrifier.buffer_dtype`)."""
    t, f32 = dtype, torch.float32
    kept = mogrifier.buffer_dtype(dtype, mogrifier.SPLIT_BELOW_K, hidden_size, hidden_size, 16)
    x_rounds, h_rounds = (rounds + 1) // 2 > 0, rounds // 2 > 0
    round_bias = round_bias and rounds > 0
    shared = dict(x=_pointer(t), lengths=_pointer("i64", lengths), w_ih=_pointer(t), w_hh=_pointer(t))
    sizes = dict(T="i32", B="i32", I="i32", H="i32", T_BUF="i32", RANK="i32", stride_w="i32")
    forward = dict(**shared, bias=_pointer(f32, bias), w_round=_pointer(t, rounds > 0),
                   q_bias=_pointer(t, round_bias and x_rounds), r_bias=_pointer(t, round_bias and h_rounds),
                   out=_pointer(t), hs=_pointer(kept), xs=_pointer(kept, x_rounds), cs="*fp32",
                   s_x=_pointer(kept, save and x_rounds), s_h=_pointer(kept, save and h_rounds),
                   gates=_pointer(kept, save), thin=_pointer(kept, low_rank != 0), counter="*i32", **sizes)
    backward = dict(**shared, w_round=_pointer(t, rounds > 0), d_out=_pointer(t), hs=_pointer(kept),
                    xs=_pointer(kept, x_rounds), cs="*fp32", s_x=_pointer(kept, x_rounds),
                    s_h=_pointer(kept, h_rounds), gates=_pointer(kept), dz=_pointer(kept),
                    da_x=_pointer(kept, x_rounds), da_h=_pointer(kept, h_rounds), d_thin=_pointer(kept, low_rank != 0),
                    g_x="*fp32", g_h="*fp32", d_h="*fp32", d_c="*fp32", d_x=_pointer(t), counter="*i32", **sizes)
    split = mogrifier.SPLIT_BELOW_K
    forward_flags = dict(ROUNDS=rounds, LOW_RANK=low_rank, REVERSE=reverse, HAS_LENGTHS=lengths, HAS_BIAS=bias,
                         HAS_ROUND_BIAS=round_bias, SAVE=save, SPLIT_BELOW_K=split)
    backward_flags = dict(ROUNDS=rounds, LOW_RANK=low_rank, REVERSE=reverse, HAS_LENGTHS=lengths, SPLIT_BELOW_K=split)
    return ((mogrifier._mogrifier_fwd_kernel, forward, forward_flags),
            (mogrifier._mogrifier_bwd_kernel, backward, backward_flags))


def _cuobjdump():
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


_SASS_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def _machine_code(cubin: bytes):
    """``(registers, stack bytes, spills in loops)`` of a kernel's cubin. A loop is the code
    from a backward branch's target to the branch; a spill in it is a local-memory load or
    store (``LDL``, ``STL``) there. ptxas parks a value across the time loop at times (a
    store before it, a load after), which costs nothing per step."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([_cuobjdump(), "--dump-resource-usage", "--dump-sass", file.name], check=True,
                                capture_output=True, text=True).stdout
    registers, stack = map(int, re.search(r"REG:(\d+) STACK:(\d+)", report).groups())
    code = [(int(address, 16), instruction) for address, instruction in _SASS_INSTRUCTION.findall(report)]
    loops = [(int(target, 16), address) for address, instruction in code
             for target in re.findall(r"\bBRA 0x([0-9a-f]+)", instruction) if int(target, 16) < address]
    spills = [address for address, instruction in code if re.match(r"(@!?\w+\s+)?(LDL|STL)\b", instruction)]
    return registers, stack, sum(any(start <= address <= end for start, end in loops) for address in spills)


def _jit_function(kernel):
    """The ``JITFunction`` under any ``@triton.heuristics`` wrappers."""
    while not isinstance(kernel, triton.runtime.JITFunction):
        kernel = kernel.fn
    return kernel


def launch_attributes(kernel, signature, sizes):
    """What a launch tells the compiler: every pointer 16-byte aligned (torch allocations are),
    and each integer argument of ``sizes`` (name: the value a launch passes) divisible by 16
    where it is. It decides whether rows load as vectors and chunks copy asynchronously."""
    names = _jit_function(kernel).arg_names
    return {(names.index(name),): [["tt.divisibility", 16]] for name, kind in signature.items()
            if kind.startswith("*") or sizes.get(name, 1) % 16 == 0}


def compile_kernel(kernel, signature, values, options, arch, attributes=None):
    """One kernel for ``sm_{arch}``: its :class:`Resources`; raises Triton's error where the
    GPU compiler rejects it. ``attributes`` as from :func:`launch_attributes` (default: none,
    the least the compiler may assume)."""
    values = {**{name: None for name, kind in signature.items() if kind == "constexpr"}, **values}
    signature = {**signature, **{key: "constexpr" for key in values if key not in signature}}
    compiled = triton.compile(ASTSource(_jit_function(kernel), signature, values, attributes),
                              target=GPUTarget("cuda", arch, 32), options=options)
    registers, stack, spills_in_loops = _machine_code(compiled.asm["cubin"])
    return Resources(compiled.metadata.shared, registers, stack, spills_in_loops, _element_loads(compiled.asm["ptx"]))


def _compile(kernels, constexprs, options, arch, launch_sizes=None):
    """Compiles each ``(kernel, signature, flags)`` of ``kernels`` (forward, backward) for
    ``sm_{arch}``, as a launch with the integer arguments ``launch_sizes`` specialises it
    (default: as none does); returns ``{"forward": Resources, "backward": Resources}``."""
    return {name: compile_kernel(kernel, signature, {**flags, **constexprs}, options, arch,
                                 None if launch_sizes is None else launch_attributes(kernel, signature, launch_sizes))
            for name, (kernel, signature, flags) in zip(("forward", "backward"), kernels)}


def precision_constexprs(dtype):
    return dict(INPUT_PRECISION="tf32" if dtype == torch.float32 else "ieee", UPCAST_DOT=False)


def compile_lstm(config: layout.SweepConfig, dtype: torch.dtype, arch: int = 90, launch_shape=None, **flags):
    """The LSTM/G2 sweep kernels of ``config`` for ``sm_{arch}``, specialised as a launch at
    ``launch_shape = (B, H)`` would be (see :func:`launch_attributes`); ``flags`` as in :func:`lstm_kernels`."""
    return _compile(lstm_kernels(dtype, **flags), {**config.constexprs(), **precision_constexprs(dtype)},
                    config.launch_options(), arch,
                    None if launch_shape is None else dict(zip(("B", "H"), launch_shape)))


def compile_mogrifier(config: mogrifier.MogrifierConfig, dtype: torch.dtype, rounds: int, arch: int = 90,
                      launch_shape=None, **flags):
    """The Mogrifier sweep kernels of ``config`` with ``rounds`` rounds for ``sm_{arch}``, specialised
    as a launch at ``launch_shape = (B, I, H)`` would be; ``flags`` as in :func:`mogrifier_kernels`."""
    sizes = None
    if launch_shape is not None:
        batch_size, input_size, hidden_size = launch_shape
        sizes = dict(B=batch_size, I=input_size, H=hidden_size)
        if not flags.get("low_rank"):  # then a round's I·H elements apart in w_round
            sizes["stride_w"] = input_size * hidden_size
    return _compile(mogrifier_kernels(dtype, rounds, **flags), {**config.constexprs(), **precision_constexprs(dtype)},
                    config.launch_options(), arch, sizes)


def main(argv=None):
    """``python -m fusedrnn.triton_kernels.offline --dtype bfloat16 --config '{"block_b": 16, ...}'``
    (or ``--cell mogrifier --rounds 5 --config '{"programs": 64, ...}'``) prints the resources
    of each kernel as JSON (run with ``TRITON_INTERPRET`` unset). Add ``--launch-shape`` for what
    a launch gets: without it no size is known divisible and no pointer aligned, so loads are
    narrower, fewer copies asynchronous, and the registers and spills not what a launch gets."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dtype", choices=[str(d).replace("torch.", "") for d in _TYPES], required=True)
    parser.add_argument("--cell", choices=["lstm", "mogrifier"], default="lstm", help="lstm also covers g2")
    parser.add_argument("--rounds", type=int, default=5, help="the Mogrifier's rounds")
    parser.add_argument("--low-rank", type=int, default=0,
                        help="the Mogrifier's low-rank rounds: bit j - 1 set for round j")
    parser.add_argument("--config", required=True, help="SweepConfig (MogrifierConfig) fields as a JSON object")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--launch-shape", type=int, nargs="+", metavar="N",
                        help="specialise as a launch does: B H (lstm) or B I H (mogrifier); default: as none does")
    args = parser.parse_args(argv)
    if common.interpreting():
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    if args.launch_shape and len(args.launch_shape) != (3 if args.cell == "mogrifier" else 2):
        parser.error(f"--launch-shape for {args.cell} is {'B I H' if args.cell == 'mogrifier' else 'B H'}")
    dtype, fields = getattr(torch, args.dtype), json.loads(args.config)
    if args.cell == "mogrifier":
        resources = compile_mogrifier(mogrifier.MogrifierConfig(**fields), dtype, args.rounds, args.arch,
                                      args.launch_shape, low_rank=args.low_rank)
    else:
        resources = compile_lstm(layout.SweepConfig(**fields), dtype, args.arch, args.launch_shape)
    print(json.dumps({name: vars(used) for name, used in resources.items()}))


if __name__ == "__main__":
    main()
