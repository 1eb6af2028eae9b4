"""What the benchmark hands back: machine info, a Markdown table, JSON and a chart. Tables
and charts read the JSON form of the rows, so a committed results file renders as the run did."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from .. import __version__
from .measure import Config

SCHEMA = "fusedrnn-bench/2"
#: Speed-up columns, for those of these a results file timed.
SPEEDUP_BASELINES = ("nn.LSTM", "eager", "reference")


def machine_info(device: torch.device) -> Dict[str, object]:
    import triton
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    info = {"device": device.type, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "triton": triton.__version__, "fusedrnn": __version__}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
        with contextlib.suppress(OSError, subprocess.SubprocessError):  # the clocks, when nvidia-smi is there
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm",
                                  "--format=csv,noheader", f"--id={device.index or 0}"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            info.update(zip(("driver", "sm_clock", "max_sm_clock"), out.strip().split(", ")))
    return info


def results_document(command: Sequence[str], device: torch.device, rows: List[dict], **fields) -> Dict[str, object]:
    """A results file: the command, the date, the machine, ``fields`` and ``rows`` (the list the
    run appends to). :func:`save` writes it as JSON; ``--report`` reads it back."""
    return {"schema": SCHEMA, "command": shlex.join(command), "date": datetime.date.today().isoformat(),
            "machine": machine_info(device), **fields, "rows": rows}


def save(document: Dict[str, object], path) -> None:
    """Writes ``document`` to ``path``; a run calls it after every configuration, so that one
    stopped by a time limit keeps the rows it finished."""
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def machine_summary(info: Dict[str, object]) -> str:
    hardware = (f"{info['gpu']} (CUDA {info['cuda']}, cuDNN {info['cudnn']})" if info.get("gpu") else
                f"CPU ({info['cpu']}, {info['torch_threads']} of {info['cpu_count']} threads)")
    return f"{hardware}, torch {info['torch']}, triton {info['triton']}, fusedrnn {info['fusedrnn']}"


def _shape(r) -> str:
    return Config(**{field.name: r[field.name] for field in dataclasses.fields(Config)}).shape


def _key(r, implementation=None):
    return r["cell"], _shape(r), r["dtype"], r["direction"], implementation or r["implementation"]


def table(rows: List[dict]) -> str:
    """One line per configuration, direction and implementation; ``× b`` is b's time over
    this one (> 1: faster than b); ``peak MiB`` (CUDA runs) what one call allocates at most
    beyond its inputs; the last column is the error against the reference."""
    times = {_key(r): r["median_ms"] for r in rows if r["median_ms"]}
    baselines = [b for b in SPEEDUP_BASELINES if any(r["implementation"] == b for r in rows)]
    memory = any(r.get("peak_mib") is not None for r in rows)
    lines = ["| cell | B-T-I-H | dtype | dir | implementation | median ms | µs/step | "
             + ("peak MiB | " if memory else "") + "".join(f"× {b} | " for b in baselines) + "rel. error / note |",
             "|" + "---|" * (8 + memory + len(baselines))]
    for r in rows:
        timed = r["median_ms"] is not None
        speedups = [f"{times[_key(r, b)] / r['median_ms']:.2f}" if timed and _key(r, b) in times else "-"
                    for b in baselines]
        note = f"{r['error']:.1e}" + (" (over tolerance)" if not r["error"] <= r["tolerance"] else "") if r["status"] == "ok" \
            else f"{r['status']}: {r['reason']}".replace("|", "/").replace("\n", " ")
        note += f"; first call {r['first_call_s']:.1f} s" if r["implementation"] == "compiled" and timed else ""
        lines.append(f"| {r['cell']} | {_shape(r)} | {r['dtype']} | {r['direction']} | {r['implementation']} | "
                     + (f"{r['median_ms']:.3f} | {r['us_per_step']:.1f}" if timed else "- | -")
                     + (f" | {r['peak_mib']:.0f}" if r.get("peak_mib") is not None else " | -" if memory else "")
                     + "".join(f" | {speedup}" for speedup in speedups) + f" | {note} |")
    return "\n".join(lines) + "\n"


def markdown_report(document: Dict[str, object]) -> str:
    """The table with what it ran on and how: README's performance section."""
    if document.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} results file: schema {document.get('schema')!r}")
    done, planned = len(document["rows"]), document.get("planned_rows", len(document["rows"]))
    stopped = f" (stopped after {done} of {planned} rows)" if done < planned else ""
    return (f"Measured {document['date']} on {machine_summary(document['machine'])}{stopped}:\n"
            f"`{document['command']}`\n\n" + table(document["rows"]))


def timed_calls(path) -> Dict[tuple, Dict[str, float]]:
    """``{(cell, dtype, direction, B, T, H): {implementation: median ms}}`` over a results file's
    timed rows: what the scripts and tests that compare implementations call by call read."""
    found = {}
    for row in json.loads(Path(path).read_text())["rows"]:
        if row["median_ms"] is not None:
            call = (row["cell"], row["dtype"], row["direction"], row["batch_size"], row["seq_len"], row["hidden_size"])
            found.setdefault(call, {})[row["implementation"]] = row["median_ms"]
    return found


def plot(document: Dict[str, object], path) -> None:
    """A results document's µs per step per configuration, a panel per cell and direction; the
    black line is nn.LSTM float16 on the same sizes (cuDNN fp16: the line to beat; without
    float16 rows, as on a CPU, nn.LSTM in the dtype measured). No file when no row was timed
    (a stage stopped before its first row, or every row declined)."""
    timed = [r for r in document["rows"] if r["median_ms"] is not None]
    if not timed:
        return print(f"# no chart: no row of {len(document['rows'])} was timed", file=sys.stderr)
    import matplotlib.pyplot as plt
    plt.switch_backend("agg")  # files only, with or without a display
    panels = list(dict.fromkeys((r["cell"], r["direction"]) for r in timed))
    names = list(dict.fromkeys(r["implementation"] for r in timed))
    lstm = [r for r in timed if r["implementation"] == "nn.LSTM"]
    line_dtype = "float16" if any(r["dtype"] == "float16" for r in lstm) else lstm[0]["dtype"] if lstm else None
    to_beat = {(_shape(r), r["direction"]): r["us_per_step"] for r in lstm if r["dtype"] == line_dtype}
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 3 * len(panels)), squeeze=False, layout="constrained")
    for (cell, direction), axis in zip(panels, axes[:, 0]):
        mine = [r for r in timed if (r["cell"], r["direction"]) == (cell, direction)]
        labels = list(dict.fromkeys((_shape(r), r["dtype"]) for r in mine))
        for k, name in enumerate(names):
            points = [(labels.index((_shape(r), r["dtype"])), r["us_per_step"]) for r in mine if r["implementation"] == name]
            if points:
                axis.plot(*zip(*points), "os^Dv<>p"[k % 8], color=plt.cm.tab10(k % 10), label=name)
        beat = [(x, to_beat[shape, direction]) for x, (shape, _) in enumerate(labels) if (shape, direction) in to_beat]
        if beat:  # a wide marker, visible at one size too
            axis.plot(*zip(*beat), "_", color="black", markersize=30, zorder=0, label=f"to beat: nn.LSTM {line_dtype}")
        axis.set_xticks(range(len(labels)), [f"{shape}\n{dtype}" for shape, dtype in labels], fontsize=7)
        axis.set(yscale="log", ylabel="µs per step (median)", title=f"{cell}, {direction}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle(f"fusedrnn benchmark: {machine_summary(document['machine'])}", fontsize=9)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
