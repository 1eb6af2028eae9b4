"""What the benchmark hands back: the table (text or Markdown), JSON, the chart, and the
machine it ran on."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from .. import __version__
from .implementations import BASELINES
from .runner import Result

SCHEMA = "fusedrnn-bench/1"
_REASON_WIDTH = 70


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _nvidia_driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def machine_info(device: torch.device) -> Dict[str, object]:
    """Versions and hardware: what a result needs to be reproduced or compared."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    info = {"device": device.type, "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
            "fusedrnn": __version__}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_bytes=properties.total_memory, driver=_nvidia_driver(),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return info


def machine_summary(info: Dict[str, object]) -> str:
    threads = info["torch_threads"]
    hardware = info.get("gpu") or f"CPU {info['cpu']} ({threads} thread{'' if threads == 1 else 's'})"
    driver = f", driver {info['driver']}" if info.get("driver") else ""
    return f"{hardware}{driver}; torch {info['torch']}, triton {info['triton']}, fusedrnn {info['fusedrnn']}"


def _baselines(results: Sequence[Result]) -> List[str]:
    present = {r.implementation for r in results}
    return [name for name in BASELINES if name in present]


def _row(result: Result, baselines: Sequence[str]) -> List[str]:
    c = result.config

    def number(value, fmt):
        return "-" if value is None else format(value, fmt)

    memory = None if result.peak_memory_bytes is None else result.peak_memory_bytes / 2 ** 20
    speedups = [number(result.speedups.get(name), ".2f") for name in baselines]
    if result.status == "ok":
        status = f"ok ({result.error:.1e})"
    else:
        reason = result.reason or ""
        status = f"{result.status}: {reason[:_REASON_WIDTH]}{'…' if len(reason) > _REASON_WIDTH else ''}"
    return [c.cell, str(c.batch_size), str(c.seq_len), str(c.input_size), str(c.hidden_size), c.dtype,
            result.direction, result.implementation, number(result.median_ms, ".3f"),
            number(result.us_per_step, ".1f"), number(memory, ".1f"), *speedups, status]


def _table_order(results: Sequence[Result]) -> List[Result]:
    """Grouped by configuration and direction, in the order they ran."""
    groups = list(dict.fromkeys((r.config, r.direction) for r in results))
    return sorted(results, key=lambda r: groups.index((r.config, r.direction)))


def format_table(results: Sequence[Result], markdown: bool = False) -> str:
    """One row per configuration, direction and implementation: median ms, µs per step, peak
    memory, speed-up over each baseline (``baseline time / time``, > 1 is faster), and the
    correctness check (its worst relative error, or why the row was not timed)."""
    results = _table_order(results)
    baselines = _baselines(results)
    header = ["cell", "B", "T", "I", "H", "dtype", "dir", "implementation", "median ms", "µs/step",
              "peak MiB", *[f"x {name}" for name in baselines], "check"]
    rows = [_row(result, baselines) for result in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"
    widths = [max(len(line[k]) for line in [header] + rows) for k in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    previous = None
    for result, row in zip(results, rows):
        if previous is not None and (result.config, result.direction) != previous:
            lines.append("")
        previous = (result.config, result.direction)
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def to_json(results: Sequence[Result], machine: Dict[str, object], command: str,
            settings: Dict[str, object]) -> Dict[str, object]:
    """The JSON document ``--json`` writes (schema ``fusedrnn-bench/1``)."""
    rows = []
    for r in results:
        c = r.config
        rows.append({"cell": c.cell, "batch_size": c.batch_size, "seq_len": c.seq_len,
                     "input_size": c.input_size, "hidden_size": c.hidden_size, "dtype": c.dtype,
                     "direction": r.direction, "implementation": r.implementation, "kind": r.kind,
                     "status": r.status, "reason": r.reason, "median_ms": r.median_ms,
                     "us_per_step": r.us_per_step, "repetitions": r.repetitions,
                     "peak_memory_bytes": r.peak_memory_bytes, "check_error": r.error,
                     "check_tolerance": r.tolerance, "speedup": dict(r.speedups)})
    return {"schema": SCHEMA, "command": command, "machine": machine, "settings": settings, "results": rows}


def write_json(path: Path, document: Dict[str, object]) -> None:
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def _varying_sizes(rests) -> set:
    """The size letters whose values differ between a panel's lines: what tells them apart."""
    values = defaultdict(set)
    for rest in rests:
        for letter, value in rest:
            values[letter].add(value)
    return {letter for letter, seen in values.items() if len(seen) > 1}


def plot(results: Sequence[Result], path: Path, title: str) -> None:
    """Time per step against batch size (left) and hidden size (right), one row of panels
    per cell and direction; colour is the implementation, marker the dtype. Points that
    differ only in the plotted size are joined by lines, each labelled at its end with the
    sizes that tell it apart from the panel's other lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import ScalarFormatter

    timed = [r for r in results if r.median_ms is not None]
    panels = list(dict.fromkeys((r.config.cell, r.direction) for r in results))
    names = list(dict.fromkeys(r.implementation for r in results))
    dtypes = list(dict.fromkeys(r.config.dtype for r in results))
    colours = {name: plt.cm.tab10(k % 10) for k, name in enumerate(names)}
    markers = dict(zip(dtypes, "os^Dv"))
    axes_specs = [("batch size B", lambda c: c.batch_size,
                   lambda c: (("T", c.seq_len), ("H", c.hidden_size),
                              ("I", "=H" if c.input_size == c.hidden_size else c.input_size))),
                  ("hidden size H (I = H where equal)", lambda c: c.hidden_size,
                   lambda c: (("B", c.batch_size), ("T", c.seq_len),
                              ("I", "=H" if c.input_size == c.hidden_size else c.input_size)))]
    height = 3.2 * len(panels) + 1.0
    figure, axes = plt.subplots(len(panels), 2, figsize=(12, height), squeeze=False)
    for (cell, direction), row in zip(panels, axes):
        for axis, (label, x_of, rest_of) in zip(row, axes_specs):
            lines = defaultdict(list)
            for r in timed:
                if (r.config.cell, r.direction) == (cell, direction):
                    lines[(r.implementation, r.config.dtype, rest_of(r.config))].append((x_of(r.config), r.us_per_step))
            varying = _varying_sizes([rest for _, _, rest in lines])
            for (name, dtype, rest), points in lines.items():
                xs, ys = zip(*sorted(points))
                axis.plot(xs, ys, color=colours[name], marker=markers[dtype], linewidth=1, markersize=5)
                tag = " ".join(f"{letter}{value}" for letter, value in rest if letter in varying)
                axis.annotate(tag, (xs[-1], ys[-1]), xytext=(4, 0), textcoords="offset points",
                              fontsize=7, color=colours[name], va="center")
            axis.set_xscale("log", base=2)
            axis.margins(x=0.15)  # room for the line labels
            axis.set_yscale("log")
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.set_xlabel(label)
            axis.set_ylabel("µs per step (median)")
            axis.set_title(f"{cell}, {'forward' if direction == 'fwd' else 'forward + backward'}")
            axis.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colours[name], label=name) for name in names]
    handles += [Line2D([], [], color="grey", marker=markers[dtype], linestyle="", label=dtype) for dtype in dtypes]
    margin = 0.5 / height  # half an inch for the title and for the legend
    figure.suptitle(title, y=1 - margin / 3)
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False)
    figure.tight_layout(rect=(0, margin, 1, 1 - margin))
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
