"""How far the Triton sweeps are from float64 in bfloat16 now that they keep what their backward
reads in bfloat16 (the LSTM/G2 gates, the Mogrifier's chains, gates and gradients; SPEC §6.1),
and how a long memory compares across backends (SPEC §6.2).

Runs on a CPU: the sweeps on Triton's interpreter, made to round float32 → bfloat16 as a GPU
does (``testing.round_like_a_gpu_in_the_interpreter``). Each row is the worst relative error over
outputs, final states and every gradient (``fusedrnn.testing.check``) of its problems; the long
memory rows give each backend's error on one problem whose forget gates sit near 0.95.

    TRITON_INTERPRET=1 python bench/bf16_saved_error.py [--json PATH]
"""
import argparse
import itertools
import json

import torch

from fusedrnn import testing
from fusedrnn.precision import relative_error, tolerance

#: The LSTM/G2 call variants, and small problems (few terms per sum: where rounding shows most).
LSTM_CASES = (("lstm", {}), ("g2", {}), ("g2", dict(gate_mode="soft")), ("g2", dict(gate_mode="hard")))
VARIANTS = (dict(), dict(lengths=True), dict(reverse=True, lengths=True), dict(weight_options=dict(bias=False)))
LSTM_STEPS_ROWS = ((1, 1), (2, 1), (3, 2), (7, 3), (1, 4))
#: The Mogrifier's, over ``T·B = 16`` rows (fewer keep float32 buffers: ``mogrifier.buffer_dtype``).
MOGRIFIER_VARIANTS = VARIANTS + (dict(weight_options=dict(mogrify_steps=6)),)
MOGRIFIER_STEPS_ROWS = ((4, 4), (1, 16), (8, 2))
SEEDS = range(2)
#: ``(T, B, I, H)`` and the forget-gate bias of the long-memory problem.
LONG_MEMORY = ((512, 4, 33, 32), 3.0)


def worst(cases):
    """The worst :func:`fusedrnn.testing.check` verdict of the Triton sweep over ``(cell, shape, options)``."""
    verdicts = []
    for (cell, shape, options), seed in itertools.product(cases, SEEDS):
        torch.manual_seed(seed)
        problem = testing.random_problem(cell, shape, **options)
        verdicts.append(testing.check(testing.on_backend("triton"), testing.ground_truth(problem, torch.bfloat16)))
    return max(verdicts, key=lambda verdict: verdict.error)


def groups():
    """``(label, cases)`` rows: small LSTM/G2 problems by width, small Mogrifier ones by width and rank, larger ones."""
    for width in (4, 8, 16, 32):
        yield f"LSTM/G2, H = {width}, T·B ≤ 21", [(cell, (t, b, width + 1, width), {**options, **variant})
                                                 for cell, options in LSTM_CASES for t, b in LSTM_STEPS_ROWS
                                                 for variant in VARIANTS]
    for width, rank in ((16, None), (32, None), (64, None), (64, 16)):
        label = f"Mogrifier, I = H = {width}" + (f", rank {rank}" if rank else "") + ", T·B = 16"
        yield label, [("mogrifier", (t, b, width, width), dict(variant, weight_options={
            **variant.get("weight_options", {}), "mogrify_rank": rank})) for t, b in MOGRIFIER_STEPS_ROWS
                      for variant in MOGRIFIER_VARIANTS]
    yield "LSTM/G2, T, B, I, H = 16, 8, 128, 128", [(cell, (16, 8, 128, 128), options) for cell, options in LSTM_CASES]
    yield "Mogrifier, T, B, I, H = 32, 16, 128, 128", [("mogrifier", (32, 16, 128, 128), {})]


def long_memory(backend):
    """Each output's and gradient's error on the long-memory problem (forget-gate biases raised)."""
    shape, forget_bias = LONG_MEMORY
    torch.manual_seed(0)
    problem = testing.random_problem("lstm", shape)
    hidden_size = shape[3]
    problem.weights["bias_ih"][hidden_size:2 * hidden_size] += forget_bias
    truth = testing.ground_truth(problem, torch.bfloat16)
    return {name: relative_error(actual, expected) for name, actual, expected in
            testing.compare(testing.on_backend(backend), truth)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    testing.round_like_a_gpu_in_the_interpreter()
    bound = tolerance(torch.bfloat16, "cpu")
    rows = []
    print("| problems | cases | worst error | where | SPEC bound |\n|---|---|---|---|---|")
    for label, cases in groups():
        verdict = worst(cases)
        rows.append({"problems": label, "cases": len(cases) * len(SEEDS), "error": verdict.error,
                     "worst": verdict.worst, "tolerance": bound})
        print(f"| {label} | {len(cases) * len(SEEDS)} | {verdict.error:.2e} | {verdict.worst} | {bound:.0e} |",
              flush=True)
    (steps, batch, _, hidden), forget_bias = LONG_MEMORY
    print(f"\nLong memory (T = {steps}, B = {batch}, H = {hidden}, forget-gate bias + {forget_bias:g}):\n"
          "| backend | worst error | where |\n|---|---|---|")
    for backend in ("triton", "torch", "cpu"):
        errors = long_memory(backend)
        name = max(errors, key=errors.get)
        rows.append({"problems": f"long memory, {backend}", "cases": 1, "error": errors[name], "worst": name,
                     "errors": errors, "tolerance": bound})
        print(f"| {backend} | {errors[name]:.2e} | {name} |", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"command": f"TRITON_INTERPRET=1 python bench/bf16_saved_error.py --json {args.json}",
                       "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
