"""A character-level language model trained with fusedrnn: the real training workload.

Embedding → fusedrnn recurrent layers (``LSTM``, ``MogrifierLSTM`` or ``G2LSTM``) →
linear, trained with truncated backpropagation through time (the state ``(h, c)`` is
carried across windows, detached) on CPython's own documentation text,
``pydoc_data.topics``, which ships with Python: no download. The text is split by
position into train / validation / test (90 / 5 / 5 %).

It reports train and validation bits per character and training tokens per second,
saves a checkpoint it can resume from exactly (``--checkpoint``, ``--resume``), and for
an LSTM or G2-LSTM draws the histogram of input- and forget-gate values on the
validation text (``--gate-histogram``), beside a plain LSTM's (``--histogram-baseline``).

Needs, besides fusedrnn::

    pip install tqdm matplotlib

Run from the repository root (or with fusedrnn installed, without ``PYTHONPATH``)::

    PYTHONPATH=. python examples/char_lm.py --cell lstm --steps 2000 --checkpoint lstm.pt
    PYTHONPATH=. python examples/char_lm.py --cell g2 --steps 2000 --checkpoint g2.pt \\
        --gate-histogram gates.png --histogram-baseline lstm.pt
    PYTHONPATH=. python examples/char_lm.py --resume g2.pt --steps 4000   # train on, saved back to g2.pt
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import fusedrnn
from fusedrnn import functional
from fusedrnn.reference import input_forget_gates

CELLS = {"lstm": fusedrnn.LSTM, "mogrifier": fusedrnn.MogrifierLSTM, "g2": fusedrnn.G2LSTM}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
#: Fractions of the text, by position, for train, validation and test.
SPLITS = (0.90, 0.05, 0.05)
#: Settings that define a run; a resumed run takes them from its checkpoint.
CONFIG_KEYS = ("cell", "layers", "embedding_size", "hidden_size", "dropout", "batch_size", "bptt", "lr",
               "clip", "dtype", "seed", "mogrify_steps", "mogrify_rank", "temperature", "noise_prob")
GATE_BINS = 50


# --- data ---------------------------------------------------------------------------------

def load_text() -> str:
    """CPython's documentation topics (``pydoc_data.topics``), in a fixed order."""
    from pydoc_data.topics import topics
    return "\n".join(topics[key] for key in sorted(topics))


@dataclass
class Corpus:
    """The text as character ids, split by position; ``vocabulary[i]`` is character ``i``."""

    vocabulary: str
    checksum: int
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


def build_corpus(text: str) -> Corpus:
    vocabulary = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocabulary)}
    ids = torch.tensor([index[char] for char in text], dtype=torch.int64)
    train_end = int(len(ids) * SPLITS[0])
    valid_end = train_end + int(len(ids) * SPLITS[1])
    return Corpus(vocabulary, zlib.crc32(text.encode()), ids[:train_end], ids[train_end:valid_end],
                  ids[valid_end:])


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(N, B)``: the text cut into ``B`` contiguous streams, read in parallel."""
    length = len(ids) // batch_size
    if length < 2:
        raise ValueError(f"batch_size {batch_size} leaves fewer than 2 characters per stream")
    return ids[:length * batch_size].view(batch_size, length).t().contiguous()


def window(streams: torch.Tensor, position: int, bptt: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets ``(T, B)`` of the window starting at ``position``."""
    steps = min(bptt, len(streams) - 1 - position)
    return streams[position:position + steps], streams[position + 1:position + 1 + steps]


def windows(streams: torch.Tensor, bptt: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    for position in range(0, len(streams) - 1, bptt):
        yield window(streams, position, bptt)


# --- model --------------------------------------------------------------------------------

class CharLM(nn.Module):
    """Embedding → fusedrnn recurrent layers → linear, over ``(T, B)`` character ids.

    ``gate_noise=False`` (G2 only) keeps the G2 layers in evaluation mode while training,
    so their gates are the deterministic ``σ(z/τ)``: an ablation, and what makes two
    backends comparable step by step (each draws its own noise).
    """

    def __init__(self, cell: str, vocab_size: int, embedding_size: int, hidden_size: int, layers: int = 1,
                 dropout: float = 0.0, backend: str = "auto", gate_noise: bool = True, **cell_options):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
        if not gate_noise and cell != "g2":
            raise ValueError(f"gate_noise=False only applies to cell='g2', got cell={cell!r}")
        self.cell = cell
        self.gate_noise = gate_noise
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.recurrent = CELLS[cell](embedding_size, hidden_size, layers, dropout=dropout, backend=backend,
                                     **cell_options)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.gate_noise:
            self.recurrent.train(False)
        return self

    def forward(self, ids: torch.Tensor, state=None):
        """``ids (T, B)`` → logits ``(T, B, V)`` and the final ``(h_n, c_n)``."""
        output, state = self.recurrent(self.dropout(self.embedding(ids)), state)
        return self.decoder(self.dropout(output)), state


def build_model(config: Dict, vocab_size: int, backend: str = "auto", device="cpu", gate_noise=True) -> CharLM:
    """The model of ``config`` (the ``CONFIG_KEYS`` settings), initialised from ``config["seed"]``."""
    options = {}
    if config["cell"] == "mogrifier":
        options = dict(mogrify_steps=config["mogrify_steps"], mogrify_rank=config["mogrify_rank"])
    elif config["cell"] == "g2":
        options = dict(temperature=config["temperature"], noise_prob=config["noise_prob"])
    torch.manual_seed(config["seed"])
    model = CharLM(config["cell"], vocab_size, config["embedding_size"], config["hidden_size"], config["layers"],
                   dropout=config["dropout"], backend=backend, gate_noise=gate_noise, **options)
    return model.to(device=device, dtype=DTYPES[config["dtype"]])


def next_character_loss(logits: torch.Tensor, targets: torch.Tensor, reduction="mean") -> torch.Tensor:
    """Cross-entropy in nats, computed in float32 (or float64) whatever the model's dtype."""
    logits = logits.flatten(0, 1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets.flatten(), reduction=reduction)


def detach_state(state):
    return tuple(tensor.detach() for tensor in state)


# --- training -----------------------------------------------------------------------------

class Trainer:
    """Truncated BPTT over the training streams with Adam; knows how to checkpoint itself.

    The data position and the carried state ``(h, c)`` are part of its state, so a
    resumed run continues exactly where the saved one stopped.
    """

    def __init__(self, model: CharLM, train_ids: torch.Tensor, batch_size: int, bptt: int, lr: float,
                 clip: float):
        device = model.decoder.weight.device
        self.model = model
        self.streams = batchify(train_ids, batch_size).to(device)
        self.bptt = bptt
        self.clip = clip
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.step = 0
        self.position = 0
        self.state = None

    def train_step(self) -> Tuple[float, int]:
        """One window: forward, backward, clipped Adam update. Returns the loss in nats and
        the number of characters predicted."""
        self.model.train()
        inputs, targets = window(self.streams, self.position, self.bptt)
        logits, state = self.model(inputs, self.state)
        loss = next_character_loss(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.step += 1
        self.position += len(inputs)
        if self.position >= len(self.streams) - 1:  # a new epoch starts from a fresh state
            self.position, self.state = 0, None
        else:
            self.state = detach_state(state)
        return loss.item(), targets.numel()

    def state_dict(self) -> Dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = None if self.state is None else [tensor.cpu() for tensor in self.state]
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(), step=self.step,
                    position=self.position, state=state, rng=rng)

    def load_state_dict(self, saved: Dict):
        device = self.model.decoder.weight.device
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step, self.position = saved["step"], saved["position"]
        self.state = None if saved["state"] is None else tuple(tensor.to(device) for tensor in saved["state"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])


def save_checkpoint(path: str, trainer: Trainer, config: Dict, corpus: Corpus):
    torch.save(dict(config=config, vocabulary=corpus.vocabulary, checksum=corpus.checksum,
                    trainer=trainer.state_dict()), path)


def load_checkpoint(path: str, corpus: Corpus) -> Dict:
    """A checkpoint's contents, checked against this Python's ``pydoc_data`` text."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["checksum"] != corpus.checksum or checkpoint["vocabulary"] != corpus.vocabulary:
        raise ValueError(f"checkpoint {path!r} was trained on a different pydoc_data text "
                         f"(another Python version?); its data positions do not apply here")
    return checkpoint


@torch.no_grad()
def bits_per_character(model: CharLM, ids: torch.Tensor, batch_size: int, bptt: int) -> float:
    """Mean next-character loss over ``ids`` in bits, state carried across windows (eval mode)."""
    was_training = model.training
    model.eval()
    streams = batchify(ids, batch_size).to(model.decoder.weight.device)
    total, count, state = 0.0, 0, None
    for inputs, targets in windows(streams, bptt):
        logits, state = model(inputs, state)
        total += next_character_loss(logits, targets, reduction="sum").item()
        count += targets.numel()
    model.train(was_training)
    return total / count / math.log(2)


# --- gate histograms ----------------------------------------------------------------------

@torch.no_grad()
def gate_histograms(model: CharLM, ids: torch.Tensor, batch_size: int, bptt: int) -> Dict[str, torch.Tensor]:
    """Counts of input- and forget-gate values in ``GATE_BINS`` bins over ``[0, 1]``, over every
    layer, step and unit of ``ids``, for an LSTM or a G2-LSTM (its ``σ(z/τ)``, no noise).

    The layers run on the model's backend; the gates are recomputed from the trained weights
    and each layer's own states by :func:`fusedrnn.reference.input_forget_gates`.
    """
    if model.cell not in ("lstm", "g2"):
        raise ValueError(f"gate histograms are drawn for cell 'lstm' or 'g2', got {model.cell!r}")
    recurrent = model.recurrent
    if model.cell == "g2":
        run_layer = functools.partial(functional.g2_lstm, temperature=recurrent.temperature, gate_mode="soft")
        gate_options = dict(cell="g2", temperature=recurrent.temperature)
    else:
        run_layer, gate_options = functional.lstm, dict(cell="lstm")
    streams = batchify(ids, batch_size).to(model.decoder.weight.device)
    zeros = streams.new_zeros((batch_size, recurrent.hidden_size), dtype=model.decoder.weight.dtype)
    states = [(zeros, zeros)] * recurrent.num_layers
    counts = {"input": torch.zeros(GATE_BINS, dtype=torch.float64),
              "forget": torch.zeros(GATE_BINS, dtype=torch.float64)}
    for inputs, _ in windows(streams, bptt):
        layer_input = model.embedding(inputs)
        for layer in range(recurrent.num_layers):
            weights = [getattr(recurrent, f"{name}_l{layer}", None)
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h0, c0 = states[layer]
            output, states[layer] = run_layer(layer_input, *weights, h0, c0, backend=recurrent.backend)
            previous = torch.cat([h0.unsqueeze(0), output[:-1]])
            gates = input_forget_gates(layer_input, previous, *weights, **gate_options)
            for name, values in zip(("input", "forget"), gates):
                counts[name] += torch.histc(values.double().cpu(), GATE_BINS, 0, 1)
            layer_input = output
    return counts


def gate_summary(counts: torch.Tensor) -> Dict[str, float]:
    """Fractions of gate values below 0.1, in ``[0.4, 0.6)`` and at or above 0.9."""
    fraction = counts / counts.sum()
    tenth = GATE_BINS // 10
    return dict(below_0_1=fraction[:tenth].sum().item(), middle_0_4_to_0_6=fraction[4 * tenth:6 * tenth].sum().item(),
                above_0_9=fraction[9 * tenth:].sum().item())


def plot_gate_histograms(histograms: Sequence[Tuple[str, Dict[str, torch.Tensor]]], path: str):
    """One row per model, columns input and forget gate: the fraction of values per bin."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = torch.linspace(0, 1, GATE_BINS + 1)
    figure, axes = plt.subplots(len(histograms), 2, figsize=(9, 2.8 * len(histograms)), squeeze=False,
                                sharex=True)
    for row, (label, counts) in enumerate(histograms):
        for column, gate in enumerate(("input", "forget")):
            fraction = counts[gate] / counts[gate].sum()
            summary = gate_summary(counts[gate])
            axis = axes[row][column]
            axis.bar(edges[:-1].numpy(), fraction.numpy(), width=1 / GATE_BINS, align="edge")
            axis.set_title(f"{label}: {gate} gate\n<0.1: {summary['below_0_1']:.0%}   "
                           f"0.4–0.6: {summary['middle_0_4_to_0_6']:.0%}   ≥0.9: {summary['above_0_9']:.0%}",
                           fontsize=9)
            axis.set_ylabel("fraction of values")
    for axis in axes[-1]:
        axis.set_xlabel("gate value on the validation text")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- command line -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("the run (restored from the checkpoint with --resume)")
    run.add_argument("--cell", choices=tuple(CELLS), default="lstm")
    run.add_argument("--layers", type=int, default=1)
    run.add_argument("--embedding-size", type=int, default=64)
    run.add_argument("--hidden-size", type=int, default=256)
    run.add_argument("--dropout", type=float, default=0.0)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--bptt", type=int, default=64, help="truncated BPTT window length")
    run.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    run.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: none)")
    run.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--mogrify-steps", type=int, default=5, help="Mogrifier rounds")
    run.add_argument("--mogrify-rank", type=int, default=None, help="Mogrifier round rank (default: full)")
    run.add_argument("--temperature", type=float, default=1.0, help="G2 gate temperature")
    run.add_argument("--noise-prob", type=float, default=1.0, help="G2 probability of gate noise")
    parser.add_argument("--steps", type=int, default=1000, help="train until this many steps in all")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop training after this much training time, even before --steps")
    parser.add_argument("--backend", default="auto", choices=("auto",) + fusedrnn.BACKENDS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch chooses)")
    parser.add_argument("--eval-every", type=int, default=500, help="validate every this many steps (0: at the end)")
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--checkpoint", help="save the run here, at every validation and at the end "
                        "(default with --resume: back to the resumed file)")
    parser.add_argument("--resume", help="continue the run saved in this checkpoint, up to --steps steps in all, "
                        "and save it back there (unless --checkpoint names another file)")
    parser.add_argument("--results", help="write the final numbers and the command line to this JSON file")
    parser.add_argument("--gate-histogram", help="draw the input/forget gate histogram (PNG) of this model")
    parser.add_argument("--histogram-baseline", help="checkpoint of a plain LSTM of the same size to draw beside")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser``'s arguments, checked as far as they can be before the data and checkpoint are read."""
    args = parser.parse_args(argv)
    for name in ("layers", "embedding_size", "hidden_size", "batch_size", "bptt", "eval_batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.steps < 0 or args.eval_every < 0:
        parser.error("--steps and --eval-every must be >= 0")
    if args.histogram_baseline and not args.gate_histogram:
        parser.error("--histogram-baseline needs --gate-histogram")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device must be a torch device such as cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device (torch {torch.__version__})")
    reason = None if args.backend == "auto" else fusedrnn.dispatch.unavailable_reason(args.backend)
    if reason:
        parser.error(f"--backend {args.backend} cannot run on this machine: {reason}")
    return args


def command_line(argv: Optional[Sequence[str]]) -> str:
    """The command that runs this again: the one typed, or for ``main(argv)`` called from
    Python, the command with those arguments."""
    script, arguments = (sys.argv[0], sys.argv[1:]) if argv is None else (os.path.relpath(__file__), argv)
    return shlex.join(["python", script, *arguments])


def baseline_histogram(path: str, corpus: Corpus, config: Dict, args) -> Tuple[str, Dict[str, torch.Tensor]]:
    checkpoint = load_checkpoint(path, corpus)
    baseline = checkpoint["config"]
    if baseline["cell"] != "lstm":
        raise ValueError(f"--histogram-baseline must be a plain LSTM checkpoint, got cell {baseline['cell']!r}")
    sizes = ("layers", "embedding_size", "hidden_size")
    if any(baseline[key] != config[key] for key in sizes):
        raise ValueError(f"--histogram-baseline must have this model's size {[config[k] for k in sizes]} "
                         f"(layers, embedding, hidden), got {[baseline[k] for k in sizes]}")
    model = build_model(baseline, len(corpus.vocabulary), args.backend, args.device)
    model.load_state_dict(checkpoint["trainer"]["model"])
    label = f"LSTM ({checkpoint['trainer']['step']} steps)"
    return label, gate_histograms(model, corpus.valid, args.eval_batch_size, baseline["bptt"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Trains (or resumes), validates, checkpoints; returns the numbers it reports."""
    from tqdm import tqdm

    parser = build_parser()
    args = parse_args(parser, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = build_corpus(load_text())
    checkpoint = load_checkpoint(args.resume, corpus) if args.resume else None
    if checkpoint and args.steps <= checkpoint["trainer"]["step"]:
        parser.error(f"--steps {args.steps}: checkpoint {args.resume!r} is already at step "
                     f"{checkpoint['trainer']['step']}; --steps is the total to train to, give a larger one")
    # Resuming without --checkpoint trains on the resumed file: otherwise the new steps would be lost.
    checkpoint_path = args.checkpoint or args.resume
    config = checkpoint["config"] if checkpoint else {key: getattr(args, key) for key in CONFIG_KEYS}
    model = build_model(config, len(corpus.vocabulary), args.backend, args.device)
    trainer = Trainer(model, corpus.train, config["batch_size"], config["bptt"], config["lr"], config["clip"])
    if checkpoint:
        trainer.load_state_dict(checkpoint["trainer"])

    def validate():
        return bits_per_character(model, corpus.valid, args.eval_batch_size, config["bptt"])

    def log(text):
        if not args.quiet:
            tqdm.write(text)

    losses: List[float] = []
    interval_losses: List[float] = []
    valid_bpc = None
    train_seconds, tokens = 0.0, 0
    progress = tqdm(total=args.steps, initial=trainer.step, disable=args.quiet, unit="step", dynamic_ncols=True)
    while trainer.step < args.steps and (args.max_minutes is None or train_seconds < args.max_minutes * 60):
        start = time.perf_counter()
        loss, window_tokens = trainer.train_step()
        train_seconds += time.perf_counter() - start
        tokens += window_tokens
        losses.append(loss)
        interval_losses.append(loss)
        progress.update(1)
        progress.set_postfix(train_bpc=f"{loss / math.log(2):.3f}", tok_s=f"{tokens / train_seconds:,.0f}")
        if args.eval_every and trainer.step % args.eval_every == 0:
            valid_bpc = validate()
            train_bpc = sum(interval_losses) / len(interval_losses) / math.log(2)
            log(f"step {trainer.step}: train {train_bpc:.3f} bpc, validation {valid_bpc:.3f} bpc, "
                f"{tokens / train_seconds:,.0f} tokens/s")
            interval_losses = []
            if checkpoint_path:
                save_checkpoint(checkpoint_path, trainer, config, corpus)
    progress.close()

    if valid_bpc is None or interval_losses:
        valid_bpc = validate()
    if checkpoint_path:
        save_checkpoint(checkpoint_path, trainer, config, corpus)
    recent = losses[-(args.eval_every or len(losses)):]  # the training loss since the last validation
    results = dict(
        command=command_line(argv),
        config=config, backend=args.backend, available_backends=fusedrnn.available_backends(),
        device=str(args.device), torch=torch.__version__, threads=torch.get_num_threads(),
        parameters=sum(p.numel() for p in model.parameters()), steps=trainer.step, steps_this_run=len(losses),
        train_seconds=round(train_seconds, 1),
        tokens_per_second=round(tokens / train_seconds) if train_seconds else None,
        train_bpc=round(sum(recent) / len(recent) / math.log(2), 4) if losses else None,
        valid_bpc=round(valid_bpc, 4),
        test_bpc=round(bits_per_character(model, corpus.test, args.eval_batch_size, config["bptt"]), 4),
        losses=losses)
    log(f"done at step {trainer.step}: train {results['train_bpc']} bpc (last {len(recent)} steps), validation "
        f"{results['valid_bpc']} bpc, test {results['test_bpc']} bpc, {results['tokens_per_second']} tokens/s")

    if args.gate_histogram:
        names = {"lstm": "LSTM", "g2": "G2-LSTM"}
        histograms = [(f"{names.get(config['cell'], config['cell'])} ({trainer.step} steps)",
                       gate_histograms(model, corpus.valid, args.eval_batch_size, config["bptt"]))]
        if args.histogram_baseline:
            histograms.append(baseline_histogram(args.histogram_baseline, corpus, config, args))
        plot_gate_histograms(histograms, args.gate_histogram)
        results["gate_histogram"] = {label: {gate: gate_summary(counts[gate]) for gate in counts}
                                     for label, counts in histograms}
        log(f"gate histogram saved to {args.gate_histogram}")
    if args.results:
        import json
        with open(args.results, "w") as file:
            json.dump({key: value for key, value in results.items() if key != "losses"}, file, indent=2)
    return results


if __name__ == "__main__":
    try:
        main()
    except fusedrnn.BackendUnavailableError as error:
        # A backend this machine runs can still refuse a call (a dtype or device it lacks);
        # parse_args has already turned away one that cannot run here at all.
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {error}")
