"""The benchmark command (``python -m fusedrnn.bench``) on tiny configurations: its table,
JSON, report and chart, the gate that keeps fusedrnn's wrong answers out of it, the
baselines (timed whatever their error, computing the same cells), and its grids."""
import contextlib
import importlib.util
import io
import json
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusedrnn import BackendUnavailableError
from fusedrnn.bench import cli, main, report
from fusedrnn.bench import measure as bench_measure
from fusedrnn.bench.implementations import Implementation, implementation, users_noise
from fusedrnn.bench.measure import Config, cost, measure, truth_for
from fusedrnn.bench.report import markdown_report

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--quick", "--shapes", "3x5x4x6", "--no-progress", "--backends", "reference", "nn.LSTM", "eager"]


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
    """One run of the command on a tiny grid, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "results.json", "plot": out / "chart.png"}
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(TINY_ARGS + [f"--{key}={path}" for key, path in paths.items()])
    return status, stdout.getvalue(), json.loads(paths["json"].read_text()), paths


def _config(cell="lstm", dtype="float32", seq_len=6):
    return Config(cell, batch_size=3, seq_len=seq_len, input_size=5, hidden_size=4, dtype=dtype)


def test_command_prints_an_estimate_then_a_row_per_case(command_run):
    status, stdout, document, _ = command_run
    assert status == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("# fusedrnn benchmark on CPU")
    assert re.match(r"# 21 rows on 3 configurations: about [\d.]+ min", lines[1])
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| cell")]
    # reference and eager for every cell, nn.LSTM for the LSTM alone, in three directions
    assert len(rows) == len(document["rows"]) == 21
    assert {(r["cell"], r["implementation"]) for r in document["rows"]} == {
        ("lstm", "reference"), ("lstm", "nn.LSTM"), ("lstm", "eager"), ("mogrifier", "reference"),
        ("mogrifier", "eager"), ("g2", "reference"), ("g2", "eager")}


def test_json_rows_are_checked_then_timed(command_run):
    _, _, document, _ = command_run
    assert document["schema"] == "fusedrnn-bench/2"
    assert document["command"].startswith("python -m fusedrnn.bench --quick")
    assert document["machine"]["torch"] == torch.__version__
    assert {r["direction"] for r in document["rows"]} == {"fwd", "fwdbwd", "decode"}
    for row in document["rows"]:
        assert row["status"] == "ok", row
        assert row["error"] <= row["tolerance"] == 1e-5
        assert None not in (row["median_ms"], row["first_call_s"]) and row["repetitions"] > 1, row  # timed
        assert row["us_per_step"] == pytest.approx(row["median_ms"] * 1e3 / row["seq_len"])


def test_table_speedups_are_baseline_time_over_time(command_run):
    _, stdout, document, _ = command_run
    times = {(r["cell"], r["direction"], r["implementation"]): r["median_ms"] for r in document["rows"]}
    table = [line.split(" | ") for line in stdout.splitlines() if line.startswith("| lstm") or line.startswith("| g2")]
    for cells in table:
        cell, direction, name = cells[0][2:], cells[3], cells[4]
        expected_lstm = "-" if cell != "lstm" else f"{times[(cell, direction, 'nn.LSTM')] / times[(cell, direction, name)]:.2f}"
        assert cells[7:10] == [expected_lstm] + [f"{times[(cell, direction, b)] / times[(cell, direction, name)]:.2f}"
                                                 for b in ("eager", "reference")]


def test_table_has_a_peak_memory_column_only_for_rows_that_measured_it(command_run):
    _, _, document, _ = command_run
    assert "peak MiB" not in report.table(document["rows"])  # a CPU run measures none
    rows = [dict(row, peak_mib=12.3 + k) for k, row in enumerate(document["rows"])]
    lines = report.table(rows).splitlines()
    assert lines[0].split(" | ")[7] == "peak MiB"
    assert [line.split(" | ")[7] for line in lines[2:]] == [f"{12.3 + k:.0f}" for k in range(len(rows))]


def test_table_has_a_speedup_column_only_for_baselines_it_timed(command_run):
    _, _, document, _ = command_run
    without_eager = [r for r in document["rows"] if r["implementation"] != "eager"]
    header = report.table(without_eager).splitlines()[0]
    assert "× nn.LSTM" in header and "× reference" in header and "× eager" not in header, header


def test_report_renders_the_json_as_the_run_printed_it(command_run, capsys):
    _, stdout, document, paths = command_run
    assert main(["--report", str(paths["json"])]) == 0
    report = capsys.readouterr().out
    assert report == markdown_report(document)
    assert document["command"] in report and document["machine"]["torch"] in report
    assert report.split("\n\n", 1)[1] in stdout
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_draws_the_chart_of_a_results_file(command_run, tmp_path):
    _, _, _, paths = command_run
    assert main(["--report", str(paths["json"]), "--plot", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_file_with_no_timed_row_draws_no_chart(command_run, tmp_path, capsys):
    """As when every row of a gpu_run.sh stage was declined: the report exits 0, with a notice."""
    _, _, document, _ = command_run
    declined = tmp_path / "declined.json"
    declined.write_text(json.dumps(dict(document, rows=[dict(r, status="n/a", median_ms=None) for r in document["rows"]])))
    assert main(["--report", str(declined), "--plot", str(tmp_path / "none.png")]) == 0
    assert not (tmp_path / "none.png").exists()
    assert "no chart: no row of 21 was timed" in capsys.readouterr().err


def test_a_run_stopped_by_a_time_limit_keeps_the_rows_it_finished(monkeypatch, tmp_path):
    """gpu_run.sh stops a stage at its time limit (SIGINT): the JSON holds every configuration
    finished before it, and the report says the run stopped early."""
    measured = []

    def measure_until_the_second_configuration(impl, config, truth, direction):
        if measured and config != measured[0]:
            raise KeyboardInterrupt
        measured.append(config)
        return measure(impl, config, truth, direction)

    monkeypatch.setattr(cli, "measure", measure_until_the_second_configuration)
    path = tmp_path / "stopped.json"
    with pytest.raises(KeyboardInterrupt), contextlib.redirect_stdout(io.StringIO()):
        main(TINY_ARGS + ["--json", str(path)])
    document = json.loads(path.read_text())
    assert len(document["rows"]) == len(measured) == 9  # the LSTM's: three implementations, three directions
    assert {r["cell"] for r in document["rows"]} == {"lstm"}
    assert "(stopped after 9 of 21 rows)" in markdown_report(document)


def test_report_rejects_another_format(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "fusedrnn-bench/1", "results": []}))
    with pytest.raises(ValueError, match="fusedrnn-bench/2"):
        main(["--report", str(path)])


def test_readme_performance_section_is_generated_from_a_committed_file():
    """Every number in README's performance section comes from a committed results file."""
    readme = (ROOT / "README.md").read_text()
    sections = re.findall(r"<!-- bench-report: (\S+) -->\n(.*?)<!-- /bench-report -->", readme, re.S)
    assert sections
    for path, text in sections:
        assert text == markdown_report(json.loads((ROOT / path).read_text())), path


def _perturbed(kind, perturb):
    """The reference backend, as ``kind``, with ``perturb(outputs)`` applied to its outputs."""
    reference = implementation("reference")

    def make(problem):
        run, weights = reference.make(problem)
        return (lambda *args: perturb(run(*args))), weights

    return Implementation("broken", kind, make)


@pytest.mark.parametrize("cell", cli.CELLS)
def test_a_wrong_fusedrnn_backend_is_not_timed(cell):
    wrong = _perturbed("fusedrnn", lambda outputs: (outputs[0] * 1.001,) + tuple(outputs[1:]))
    truth = truth_for(_config(cell), CPU)
    for direction in ("fwd", "fwdbwd", "decode"):
        row = measure(wrong, _config(cell), truth, direction)
        assert (row["status"], row["median_ms"]) == ("wrong", None)
        assert "relative error" in row["reason"]


def test_a_wrong_gradient_is_caught_in_the_backward_only():
    def scale_output_gradient(outputs):
        if outputs[0].requires_grad:
            outputs[0].register_hook(lambda grad: grad * 1.01)
        return outputs

    wrong, truth = _perturbed("fusedrnn", scale_output_gradient), truth_for(_config(), CPU)
    assert measure(wrong, _config(), truth, "fwd")["status"] == "ok"
    row = measure(wrong, _config(), truth, "fwdbwd")
    assert row["status"] == "wrong" and row["reason"].startswith("grad")


def test_a_baseline_beyond_tolerance_is_timed_with_its_error():
    wrong = _perturbed("baseline", lambda outputs: (outputs[0] * 1.001,) + tuple(outputs[1:]))
    row = measure(wrong, _config(), truth_for(_config(), CPU), "fwd")
    assert row["status"] == "ok" and row["median_ms"] is not None
    assert row["error"] == pytest.approx(1e-3, rel=1e-3) and row["error"] > row["tolerance"]


def test_declined_and_crashing_implementations_are_reported_not_raised():
    def declines(problem):
        raise BackendUnavailableError("backend 'declines' cannot run this lstm call: too small")

    def crashes(problem):
        raise RuntimeError("kernel exploded")

    truth = truth_for(_config(), CPU)
    rows = [measure(Implementation(name, kind, make), _config(), truth, "fwd")
            for name, kind, make in [("declines", "fusedrnn", declines), ("crashes", "fusedrnn", crashes),
                                     ("limited", "baseline", crashes)]]
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("n/a", "backend 'declines' cannot run this lstm call: too small"),
        ("error", "RuntimeError: kernel exploded"), ("n/a", "RuntimeError: kernel exploded")]


def test_command_exits_nonzero_when_a_backend_is_wrong(monkeypatch, capsys):
    wrong = _perturbed("fusedrnn", lambda outputs: (outputs[0] + 0.1,) + tuple(outputs[1:]))
    monkeypatch.setattr(cli, "implementation", lambda name: wrong)
    assert main(["--quick", "--shapes", "2x3x4x4", "--cells", "lstm", "--backends", "reference", "--no-progress"]) == 1
    assert "FAILED lstm float32 fwd broken: output: relative error" in capsys.readouterr().err


@pytest.mark.parametrize("cell, name", [("lstm", "eager"), ("mogrifier", "eager"), ("g2", "eager"), ("lstm", "nn.LSTM")])
def test_baselines_compute_the_cell(cell, name):
    impl = implementation(name)
    truth = truth_for(_config(cell), CPU)
    for direction in ("fwdbwd", "decode"):
        row = measure(impl, _config(cell), truth, direction)
        assert row["status"] == "ok" and row["error"] <= 1e-5, row


def _operations(fn) -> int:
    """How many ATen operations ``fn()`` runs."""
    count = 0

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal count
            count += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return count


def test_the_eager_g2_loop_draws_its_noise_as_users_do():
    """A few operations a step (torch.rand, logit), not fusedrnn's Philox in plain PyTorch
    (336 a step), which made the eager G2 loop 3 to 13 times slower than what users write."""
    config = _config("g2", seq_len=8)
    problem = truth_for(config, CPU).problem
    run, _ = implementation("eager").make(problem)
    with torch.no_grad():
        given = _operations(lambda: run(problem.x, problem.h0, problem.c0, problem.noise))
        drawn = _operations(lambda: run(problem.x, problem.h0, problem.c0, None))
    assert (drawn - given) / config.seq_len <= 4, f"{drawn - given} operations to draw {config.seq_len} steps' noise"


def test_the_noise_users_draw_is_logistic():
    torch.manual_seed(0)
    noise = users_noise(4096, 8, CPU)
    assert noise.shape == (4096, 2, 8)
    assert abs(noise.mean().item()) < 0.05  # 7 standard errors
    assert noise.var().item() == pytest.approx(math.pi ** 2 / 3, rel=0.05)
    assert (noise < 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_compiled_loop_compiles_in_its_first_call_not_in_the_timed_ones(monkeypatch):
    """The compile falls in the checked first call (``first_call_s``), none of it in the calls
    the median is taken of: counted in graphs that dynamo compiled, not timed."""
    from torch._dynamo.utils import counters

    graphs, timing = {"start": counters["stats"]["unique_graphs"]}, bench_measure.cost

    def counted_cost(fn, device):
        graphs["timing starts"] = counters["stats"]["unique_graphs"]
        result = timing(fn, device)
        graphs["timing ends"] = counters["stats"]["unique_graphs"]
        return result

    monkeypatch.setattr(bench_measure, "cost", counted_cost)
    row = measure(implementation("compiled"), _config(), truth_for(_config(), CPU), "fwd")
    assert row["status"] == "ok" and row["error"] <= 1e-5
    assert graphs["start"] < graphs["timing starts"] == graphs["timing ends"], graphs


def test_decode_makes_one_call_per_step():
    calls = []
    reference = implementation("reference")

    def make(problem):
        run, weights = reference.make(problem)
        return (lambda x, *rest: calls.append(x.shape[0]) or run(x, *rest)), weights

    row = measure(Implementation("counted", "fusedrnn", make), _config(seq_len=7), truth_for(_config(seq_len=7), CPU),
                  "decode")
    assert row["status"] == "ok"
    assert set(calls) == {1} and len(calls) % 7 == 0 and len(calls) >= 14


def test_no_rows_for_what_cannot_run_on_the_device():
    names = ["auto", "cpu", "triton", "cuda", "nn.LSTM", "compiled", "flashrnn"]
    on = {device: {(c.cell, impl.name) for c, pairs in cli.cases(cli.PRESETS["quick"], names, torch.device(device)).items()
                   for _, impl in pairs} for device in ("cpu", "cuda")}
    assert {name for _, name in on["cpu"]} == {"auto", "cpu", "nn.LSTM", "compiled"}
    assert {name for _, name in on["cuda"]} == {"auto", "triton", "cuda", "nn.LSTM", "compiled", "flashrnn"}
    assert ("mogrifier", "nn.LSTM") not in on["cpu"] | on["cuda"]


@pytest.mark.parametrize("preset, device, budget_s", [("gpu", "cuda", 600), ("cpu", "cpu", 300), ("quick", "cpu", 60)])
def test_default_grids_fit_their_time_budget(preset, device, budget_s):
    names = ["auto", "triton", "cuda", "cpu", "nn.LSTM", "eager", "compiled"]
    grid = cli.cases(cli.PRESETS[preset], names, torch.device(device))
    assert cli.grid_estimate_s(grid, torch.device(device)) < budget_s


def test_gpu_grid_has_the_issue_shapes_and_cudnn_fp16():
    grid = cli.cases(cli.PRESETS["gpu"], ["nn.LSTM", "compiled"], torch.device("cuda"))
    shapes = {(c.batch_size, c.seq_len, c.input_size, c.hidden_size) for c in grid if c.dtype == "float16"}
    assert shapes >= set(cli.ISSUE_SHAPES)
    assert any(impl.name == "compiled" for pairs in grid.values() for _, impl in pairs)


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "1x2x3"], "BxTxIxH"), (["--shapes", "0x2x3x4"], "BxTxIxH"), (["--backends", "nope"], "invalid choice"),
    (["--cells", "gru"], "invalid choice"), (["--quick", "--preset", "gpu"], "not allowed with argument"),
    (["--threads", "0"], "--threads must be positive")])
def test_bad_options_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_implementation_is_a_value_error():
    with pytest.raises(ValueError, match="backends must be among"):
        implementation("nope")


def test_flashrnn_adapter_computes_the_lstm():
    pytest.importorskip("flashrnn")
    from fusedrnn.bench.implementations import flashrnn_lstm

    # flashrnn's pure-PyTorch kernel runs on CPU and shares the layout of its CUDA kernels.
    vanilla = Implementation("flashrnn-vanilla", "competitor", lambda problem: flashrnn_lstm(problem, kernel="vanilla"))
    assert measure(vanilla, _config(), truth_for(_config(), CPU), "fwdbwd")["error"] <= 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_torch_lstm_baseline_is_flattened(dtype):
    """An un-flattened nn.LSTM warns and runs slower (issue 15: 5.18 ms against 3.37 on an H200).
    Not bfloat16: PyTorch's ``flatten_parameters`` leaves those weights apart (cuDNN's
    ``is_acceptable``), so the baseline warns there as every bfloat16 ``nn.LSTM`` does."""
    config = Config("lstm", 4, 8, 16, 16, dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = [measure(implementation("nn.LSTM"), config, truth_for(config, torch.device("cuda")), direction)
                for direction in ("fwd", "fwdbwd")]
    assert [str(w.message) for w in caught if "contiguous chunk" in str(w.message)] == []
    assert all(row["status"] == "ok" for row in rows)


@pytest.mark.gpu
def test_peak_memory_is_what_a_call_allocates_beyond_what_was_there():
    device = torch.device("cuda")
    held = torch.empty(2 ** 20, device=device)  # allocated before the call: not counted
    assert cost(lambda: torch.empty(2 ** 21, device=device), device)[2] == pytest.approx(8.0, abs=0.01)
    del held


@pytest.mark.gpu
def test_command_on_cuda(tmp_path):
    path = tmp_path / "results.json"
    assert main(["--device", "cuda", "--shapes", "4x8x16x16", "--dtypes", "float32", "bfloat16", "--no-progress",
                 "--backends", "auto", "triton", "cpu", "nn.LSTM", "eager", f"--json={path}"]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert {row["implementation"] for row in rows if row["status"] == "ok"} >= {"auto", "nn.LSTM", "eager"}
    assert "cpu" not in {row["implementation"] for row in rows}
    assert all(row["peak_mib"] > 0 for row in rows if row["status"] == "ok")  # outputs at least


def _bench_script(name):
    """A script of ``bench/`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mogrifier_variants_time_round_counts_and_a_low_rank_side_by_side(monkeypatch):
    script = _bench_script("mogrifier_variants")
    problems, real_measure = [], script.measure
    monkeypatch.setattr(script, "measure", lambda impl, config, truth, d: problems.append(truth.problem) or
                        real_measure(impl, config, truth, d))
    config = Config("mogrifier", batch_size=3, seq_len=4, input_size=8, hidden_size=16, dtype="float32")
    rows = script.measure_variants(config, CPU, [0, 2], "reference")
    assert [(r["implementation"], r["direction"], r["status"]) for r in rows] == [
        (f"reference {name}", direction, "ok") for name in ("r=0", "r=2", "r=2 k=2") for direction in ("fwd", "fwdbwd")]
    rounds = [p.weights["mogrify_weights"] for p in problems[::2]]
    assert [len(weights) for weights in rounds] == [0, 2, 2]
    assert all(torch.is_tensor(w) for w in rounds[1]) and all(len(w) == 2 and w[0].shape[1] == 2 for w in rounds[2])


def test_mogrifier_variants_summary_is_the_slope_per_round_and_the_low_rank_speedup():
    script = _bench_script("mogrifier_variants")
    shape = dict(batch_size=64, seq_len=256, hidden_size=512, dtype="bfloat16", direction="fwd")
    rows = [dict(shape, mogrify_steps=0, mogrify_rank=None, median_ms=2.56, us_per_step=10.0),
            dict(shape, mogrify_steps=5, mogrify_rank=None, median_ms=15.36, us_per_step=60.0),
            dict(shape, mogrify_steps=5, mogrify_rank=64, median_ms=7.68, us_per_step=30.0),
            dict(shape, direction="fwdbwd", mogrify_steps=5, mogrify_rank=None, median_ms=None, us_per_step=None)]
    assert script.summary(rows) == "B64 T256 H512 bfloat16 fwd: one round 10.0 µs per step; rank 64 2.00× full rank"

