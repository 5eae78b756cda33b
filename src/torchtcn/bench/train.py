"""``torchtcn bench train``: time of one training step against the peers, interleaved.

The paper's sequential-MNIST setting by default (N=64, T=784, Adam; see
:mod:`torchtcn.bench.common`): torchtcn (default and ``low_memory``), pytorch-tcn 1.2.3 with
the same architecture, torch's LSTM-130 and a GRU of the same size. All models are built in
one process and timed round-robin, so that the ratios are taken under the same conditions.

Options add the peak-memory table (``--memory``, one process per model, see
:mod:`torchtcn.bench.memory`), a sweep of the sequence length for the TCN against the LSTM
(``--sweep``, time and memory, plotted to ``--plot``), mixed-precision and ``torch.compile``
rows, and a generated markdown page (``--markdown``) and JSON record (``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch

from ..commands.config_args import choice_list, non_negative_int, positive_int, positive_int_list
from . import common, memory

log = logging.getLogger(__name__)

ALL = "torchtcn,torchtcn-lowmem,pytorch-tcn,lstm,gru"
SWEEP_LENGTHS = "128,256,512,1024,2048,4096,8192,16384"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=ALL, help=f"comma list of {','.join(common.CONTENDERS)}")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch of the timed step")
    parser.add_argument("--seq-len", type=positive_int, default=784,
                        help="sequence length of the timed step (784: seq-MNIST)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=non_negative_int, default=2,
                        help="untimed steps per model first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--amp", choices=["bf16", "fp16"], action="append", default=None,
                        help="add a torchtcn row with this autocast dtype (repeatable; when "
                        "not given: bf16 on CUDA, none on the CPU)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="add a torch.compile'd torchtcn row (default on CUDA)")
    parser.add_argument("--allocators", type=choice_list(common.ALLOCATORS), default="tuned,glibc",
                        help="C-allocator settings to time under, each in a fresh process "
                        "(tuned: fixed glibc thresholds, no page faults; glibc: defaults)")
    parser.add_argument("--every-step-loss", action="store_true",
                        help="also time every model with the loss at every step (dense "
                        "gradients), under the first allocator setting")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory (see `torchtcn bench memory`)")
    parser.add_argument("--memory-batch-size", type=positive_int, default=16,
                        help="batch of the --memory step")
    parser.add_argument("--memory-seq-len", type=positive_int, default=8192,
                        help="sequence length of the --memory step")
    parser.add_argument("--memory-repeats", type=positive_int, default=2,
                        help="--memory processes per model")
    parser.add_argument("--sweep", action="store_true",
                        help="also sweep the sequence length (TCN vs LSTM, time and memory)")
    parser.add_argument("--sweep-lengths", type=positive_int_list, default=SWEEP_LENGTHS,
                        help="sequence lengths of --sweep")
    parser.add_argument("--sweep-models", default="torchtcn,torchtcn-lowmem,lstm",
                        help="models of --sweep (comma list)")
    parser.add_argument("--sweep-batch-size", type=positive_int, default=16,
                        help="batch of --sweep")
    parser.add_argument("--plot", default="docs/performance_sweep.png",
                        help="where --sweep saves its plot (PNG)")
    parser.add_argument("--json", default=None, help="write every result to this JSON file")
    parser.add_argument("--markdown", default=None,
                        help="write a performance page (tables, method, plot) to this file")


# -- the timing table ---------------------------------------------------------------------------
def entries(keys, device, amps, compiled):
    """(row label, contender key, StepOptions) for every row of the timing table."""
    rows = [(common.CONTENDERS[k].label, k, common.StepOptions()) for k in keys]
    if "torchtcn" in keys:
        for amp in amps:
            rows.append((f"torchtcn {amp} autocast", "torchtcn", common.StepOptions(amp=amp)))
        if compiled:
            rows.append(("torchtcn torch.compile", "torchtcn", common.StepOptions(compile=True)))
    return rows


def time_training(rows, batch_size, seq_len, repeats, warmup, device) -> list[dict]:
    """Median and min ms per training step of every row, interleaved in this process."""
    device = torch.device(device)
    x, y = common.batch(batch_size, seq_len, device)
    steps, params = {}, {}
    for label, key, options in rows:
        torch.manual_seed(0)
        model = common.CONTENDERS[key].build()
        params[label] = common.parameters(model)
        step = common.make_step(model, device, options)
        steps[label] = lambda step=step: step(x, y)
    times = common.interleaved_times(steps, repeats, warmup, device)
    out = []
    for label, key, options in rows:
        s = common.summarize(times[label])
        out.append({"label": label, "model": key, "amp": options.amp, "compile": options.compile,
                    "parameters": params[label], "ms_median": 1e3 * s["median"],
                    "ms_min": 1e3 * s["min"], "ms_all": [1e3 * t for t in times[label]]})
    peer = next((r["ms_median"] for r in out if r["label"] == _plain(common.PEER)), None)
    rnn = next((r["ms_median"] for r in out if r["label"] == _plain(common.RNN_PEER)), None)
    for r in out:
        # speed-up: how many times faster than the peer (peer time / this time)
        r["speedup_vs_pytorch_tcn"] = common.ratio(peer, r["ms_median"])
        r["speedup_vs_lstm"] = common.ratio(rnn, r["ms_median"])
    return out


def time_training_in_subprocess(rows, batch_size, seq_len, repeats, warmup, device,
                                allocator: str) -> list[dict]:
    """:func:`time_training` in a fresh process whose C allocator is set up per
    ``allocator`` (see ``common.ALLOCATORS``); the contenders share that process."""
    spec = {"rows": [[label, key, o.amp, o.compile, o.every_step] for label, key, o in rows],
            "batch_size": batch_size, "seq_len": seq_len, "repeats": repeats,
            "warmup": warmup, "device": str(device)}
    results = common.run_child("torchtcn.bench.train", ["--timing-child", json.dumps(spec)],
                               allocator)
    for r in results:
        r["allocator"] = allocator
    return results


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m torchtcn.bench.train")
    p.add_argument("--timing-child", required=True, help="JSON spec of the timing run")
    spec = json.loads(p.parse_args(argv).timing_child)
    rows = [(label, key, common.StepOptions(amp=amp, compile=comp, every_step=every))
            for label, key, amp, comp, every in spec["rows"]]
    results = time_training(rows, spec["batch_size"], spec["seq_len"], spec["repeats"],
                            spec["warmup"], spec["device"])
    print(json.dumps(results))
    return 0


def _plain(key: str) -> str:
    return common.CONTENDERS[key].label


def timing_table(results: dict[str, list[dict]]):
    """Header and rows: per allocator setting, median / min ms and the speed-ups."""
    allocators = list(results)
    header = ["model", "parameters"]
    for a in allocators:
        header += [f"ms/step ({a})", "min", "speed-up vs pytorch-tcn", "vs LSTM"]
    rows = []
    first = results[allocators[0]]
    for i, r0 in enumerate(first):
        row = [r0["label"], f"{r0['parameters']:,}"]
        for a in allocators:
            r = results[a][i]
            row += [f"{r['ms_median']:.1f}", f"{r['ms_min']:.1f}",
                    common.fmt(r["speedup_vs_pytorch_tcn"], ".2f") + "x",
                    common.fmt(r["speedup_vs_lstm"], ".2f") + "x"]
        rows.append(row)
    return header, rows


# -- the sequence-length sweep ------------------------------------------------------------------
def _sweep_repeats(length: int) -> int:
    # fewer repeats where one step takes seconds (the LSTM at 16K steps)
    return 5 if length <= 1024 else 3 if length <= 4096 else 2


def sweep(keys, lengths, batch_size, device, allocator: str) -> list[dict]:
    """At every length: time (interleaved, in a fresh process per length with ``allocator``)
    and peak memory (a process per model, glibc defaults)."""
    rows = [(common.CONTENDERS[k].label, k, common.StepOptions()) for k in keys]
    out = []
    for length in lengths:
        timing = time_training_in_subprocess(rows, batch_size, length, _sweep_repeats(length),
                                             1, device, allocator)
        for key, r in zip(keys, timing):
            mem = memory.measure_in_subprocess(key, batch_size, length, str(device))
            out.append({"model": key, "label": r["label"], "seq_len": length,
                        "ms_median": r["ms_median"], "ms_min": r["ms_min"],
                        "peak_mib": mem["peak_mib"]})
            log.info("sweep T=%d %s: %.1f ms, %.0f MiB", length, key, r["ms_median"],
                     mem["peak_mib"])
    return out


def sweep_table(results: list[dict]):
    keys = list(dict.fromkeys(r["model"] for r in results))
    lengths = sorted({r["seq_len"] for r in results})
    by = {(r["model"], r["seq_len"]): r for r in results}
    header = ["T"] + [f"{common.CONTENDERS[k].label} ms" for k in keys]
    header += [f"{common.CONTENDERS[k].label} MiB" for k in keys]
    rows = []
    for t in lengths:
        row = [str(t)]
        row += [common.fmt(by.get((k, t), {}).get("ms_median")) for k in keys]
        row += [common.fmt(by.get((k, t), {}).get("peak_mib"), ".0f") for k in keys]
        rows.append(row)
    return header, rows


def plot_sweep(results: list[dict], path: str, title: str) -> None:
    """Two panels against the sequence length (log-log): ms per step, peak MiB."""
    from ..report import pyplot

    plt = pyplot()

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in dict.fromkeys(r["model"] for r in results):
        rs = sorted((r for r in results if r["model"] == key), key=lambda r: r["seq_len"])
        lengths = [r["seq_len"] for r in rs]
        label = common.CONTENDERS[key].label
        ax_t.plot(lengths, [r["ms_median"] for r in rs], "o-", label=label)
        ax_m.plot(lengths, [r["peak_mib"] for r in rs], "o-", label=label)
    for ax, ylabel in ((ax_t, "ms per training step"), (ax_m, "peak memory of a step, MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command --------------------------------------------------------------------------------
def _show(title: str, header, rows, first: bool = False) -> str:
    """Print one result table under its title; return it as markdown for the report page."""
    if not first:
        print()
    print(title)
    print(common.text_table(header, rows))
    return common.markdown_table(header, rows)


def run(args) -> int:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    amps = args.amp if args.amp is not None else (["bf16"] if cuda else [])
    if "fp16" in amps and not cuda:
        raise ValueError(f"--amp fp16 needs a CUDA device, found --device {device} (CPU autocast: bf16)")
    if args.sweep:
        from ..report import pyplot

        pyplot()  # the sweep's plot needs matplotlib: say so before the benchmark runs
    compiled = args.compile if args.compile is not None else cuda
    keys = memory._runnable(common.parse_contenders(args.models))
    started = time.time()
    report = {"benchmark": "train", "machine": common.machine(), "device": str(device),
              "command": common.command_line(args)}

    rows = entries(keys, device, amps, compiled)
    allocators = list(args.allocators)
    if device.type != "cpu":
        allocators = allocators[:1]  # the C allocator does not hold the tensors there
    timing = {
        a: time_training_in_subprocess(rows, args.batch_size, args.seq_len, args.repeats,
                                       args.warmup, device, a)
        for a in allocators
    }
    t_title = (f"Training step, N={args.batch_size}, T={args.seq_len}, {device}, "
               f"{args.repeats} interleaved repeats after {args.warmup} warm-up, "
               "one process per allocator setting")
    header, trows = timing_table(timing)
    sections = [(t_title, _show(t_title, header, trows, first=True))]
    report.update(timing=timing, batch_size=args.batch_size, seq_len=args.seq_len,
                  repeats=args.repeats)

    if args.every_step_loss:
        dense_rows = [(label, key, common.StepOptions(every_step=True))
                      for label, key, _ in entries(keys, device, [], False)]
        dense = {allocators[0]: time_training_in_subprocess(
            dense_rows, args.batch_size, args.seq_len, args.repeats, args.warmup, device,
            allocators[0])}
        d_title = (f"Training step with the loss at every step (dense gradients), "
                   f"N={args.batch_size}, T={args.seq_len}, {device}, {allocators[0]} allocator")
        sections.append((d_title, _show(d_title, *timing_table(dense))))
        report["timing_every_step"] = dense

    if args.memory:
        runs = memory.measure_all(keys, args.memory_batch_size, args.memory_seq_len,
                                  args.memory_repeats, str(device))
        mheader, mrows, records = memory.table(runs)
        m_title = (f"Peak memory of one training step, N={args.memory_batch_size}, "
                   f"T={args.memory_seq_len}, {device}, {args.memory_repeats} process(es) "
                   "per model")
        sections.append((m_title, _show(m_title, mheader, mrows)))
        report["memory"] = records

    if args.sweep:
        lengths = list(args.sweep_lengths)
        skeys = memory._runnable(common.parse_contenders(args.sweep_models))
        sres = sweep(skeys, lengths, args.sweep_batch_size, device, allocators[0])
        s_title = (f"Sequence-length sweep, N={args.sweep_batch_size}, {device}: time "
                   f"({allocators[0]} allocator) and peak memory (glibc)")
        body = _show(s_title, *sweep_table(sres))
        report["sweep"] = sres  # its plot is drawn once the JSON is written
        image = None
        if args.markdown:
            image = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))
        if image:
            body += f"\n\n![time and memory against the sequence length]({image})"
        sections.append((s_title, body))

    report["seconds"] = time.time() - started
    if args.json:
        common.write_json(args.json, report)
    if args.sweep:
        plot_sweep(sres, args.plot, s_title)
        print(f"plot: {args.plot}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(page(report, sections))
    return 0


METHOD = """\
## Where the speed and memory come from

* **One autograd node per residual block** (`torchtcn.fused.FusedBlockFunction`) whenever
  the block is the plain kind (relu, weight norm or none, element or channel dropout) and
  gradients are recorded; the module path stays the reference and serves everything else
  (batch / layer norm, gates, other activations, hooks, `torch.compile`). Same function and
  gradients: tested in float64 against a block written from `F.conv1d`, with the same masks.
* **It keeps less for backward**: the block input (which the previous block keeps anyway),
  unit 1's output (zero where relu or dropout zeroed it, so it is its own mask), one bool
  mask for unit 2 and the block output (the next block's input): about one float and one
  byte per element beyond what is shared, where autograd's graph keeps a conv output, a relu
  output, a float dropout mask and a dropout output per unit.
* **Fewer passes**: the dropout scale `1 / (1 - p)` is folded into the next convolution's
  weights and into the parameter gradients; relu is written straight into the next
  convolution's padded input; on the CPU the input gradient of a dilated convolution runs as
  a forward convolution of the gradient with the flipped kernel (oneDNN's forward kernels
  are faster than its backward-data kernels at large dilations); weight norm is computed once
  per forward.
* **Backward on the residue classes that carry gradient**: with the loss on the last step
  only (sequence classification, as in the first table), the gradient reaching a block of
  dilation d is nonzero at the steps of one residue class mod d, and the block's dilated
  convolutions never mix classes: its backward runs exactly on that class's subsequence with
  dilation 1, 1/d of the work (checked per block from the gradient; exact, tested). With a
  loss at every step (the dense-gradient table) this does not apply.
* **Cheap dropout masks**: on the CPU, for p <= 0.25, the gaps between dropped elements are
  drawn (geometric, about n p random numbers instead of n) and the dropped positions are
  zeroed by a scatter; same i.i.d. Bernoulli distribution and scale as `nn.Dropout`.
* **`low_memory=True`**: each block keeps only its input and the RNG state, and recomputes
  its activations (regenerating the same masks) in backward: gradients equal the default
  mode's exactly.

## Method

* **Training step**: forward, cross-entropy on the last step's 10 logits, backward, Adam.
  Synthetic data of the paper's shapes (the time does not depend on the values). Every model
  is built in one process and the steps run round-robin (the first model of each round
  rotates), after warm-up steps, so that a slow spell of the machine hits all alike; the
  table gives the median and the minimum. Speed-up = the peer's median / this model's median.
* **Allocator**: each timing table runs in a fresh process per C-allocator setting. "glibc":
  glibc's defaults. Its mmap and trim thresholds move with the history of frees, so that a
  step of these sizes pays from none to tens of thousands of page faults (a fault per 4 KiB
  of a fresh block; up to a third of a step here) depending on which model ran before in the
  same process. "tuned": `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`,
  so that freed blocks are reused and no model pays them. Set those two variables (or use
  jemalloc / tcmalloc) when training on the CPU.
* **Models**: torchtcn `TCN(1, [25] * 8, kernel_size=7, norm="weight", dropout=0.05)`
  (default, and `low_memory=True`); pytorch-tcn 1.2.3 `TCN(1, [25] * 8, kernel_size=7,
  dropout=0.05, use_norm="weight_norm", causal=True)`; torch's `nn.LSTM` with 130 hidden
  units and `nn.GRU` with 150 (about the TCN's parameter count); each followed by the same
  linear head on the last step.
* **Peak memory**: one fresh process per model, repeat and allocator setting. After a
  warm-up step on a short sequence, the C heap is trimmed, the kernel's resident high-water
  mark is reset (`/proc/self/clear_refs`), one full-size step runs, and the table gives
  `VmHWM - VmRSS(before)`. "glibc": the allocator's defaults, what a user's process sees.
  "live": `MALLOC_MMAP_THRESHOLD_=131072`, so that freed tensors go back to the system at
  once and the peak is that of memory in use. "Saved for backward" is the size of the
  distinct storages autograd keeps between forward and backward (a saved-tensor hook).
  The sweep's memory column uses the glibc setting.
"""


def page(report: dict, sections) -> str:
    m = report["machine"]
    lines = [
        "# Training speed and memory",
        "",
        "Generated by `torchtcn bench train` (do not edit by hand; re-run the command):",
        "",
        f"    {report['command']}",
        "",
        f"Machine: {m.get('cpu')}, {m.get('threads')} threads"
        + (f", {m['gpu']}" if "gpu" in m else "")
        + f"; torch {m.get('torch')}"
        + (f", pytorch-tcn {m['pytorch-tcn']}" if "pytorch-tcn" in m else "")
        + f"; device {report['device']}. Run time {report['seconds']:.0f} s.",
        "",
    ]
    for title, body in sections:
        lines += [f"## {title}", "", body, ""]
    lines.append(METHOD)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
