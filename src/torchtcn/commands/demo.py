"""``torchtcn demo``: a TCN against an LSTM on a real task, in a few minutes on a CPU.

Runs JSB Chorales (Bach chorales as piano rolls, the paper's Table 1 row "JSB Chorales")
through the same task registry and the same trainer as ``torchtcn train``: both models with
the paper's preset (TCN: Table 2; LSTM: sized to the paper's ~300K parameters), up to the
preset's 100 epochs (~1 s per epoch each on an idle 2-core CPU; ``--epochs N`` for a shorter
run), and the best-validation model tested. It prints the comparison table and writes a plot
of both learning curves (``<out>/demo.png``).

The demo runs torch on one CPU thread unless ``--threads N`` says otherwise: its models see one
piece at a time (~300K parameters), so a second thread gained little on an idle 2-core machine
(5 epochs of both models: 20-24 s against 24-25 s), while with other jobs on both cores it made
3 epochs 4x slower (116 s against 27 s) as torch's threads wait on one another.

One change from ``torchtcn train``: each run ends once the preset's schedule has annealed the
learning rate below ``min_lr=1e-6`` (from 2e-3: four divisions by 10). The full run goes on
to ~1e-8 for its last ~50 epochs and its validation loss no longer moves, so this about
halves the wait without changing which model is best.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .train import add_common_run_arguments, exit_code, positive_int, torch_threads, train_one

DEMO_TASK = "jsb"
DEMO_MODELS = ("tcn", "lstm")
DEMO_OVERRIDES = {"min_lr": "1e-6"}
DEMO_THREADS = 1  # the default; see the module docstring


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="TCN vs LSTM on JSB Chorales in a few minutes: table + plot",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per model (default: the task preset's 100)")
    p.add_argument("--out", default="runs/demo", help="folder for the runs and demo.png")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the preset's)")
    add_common_run_arguments(p)
    threads = next(a for a in p._actions if a.dest == "threads")
    threads.help = f"CPU threads for torch (default {DEMO_THREADS}: the demo's small models gain " \
                   "little from more, and a busy machine makes more much slower)"
    p.set_defaults(func=run)


def plot_demo(records: list[dict], path) -> Path:
    """Validation NLL per epoch of every model, and the paper's TCN number for reference."""
    from ..report import pyplot, format_value, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for r in records:
        hist = r["history"]
        ax.plot([h["epoch"] for h in hist], [h[f"valid_{r['metric']}"] for h in hist], marker=".",
                label=f"{r['model']} ({r['params']:,} params, {r['wall_seconds']:.0f} s)")
    paper = records[0]["paper_tcn"]
    if paper is not None:
        ax.axhline(paper, ls="--", c="gray", label=f"paper TCN, test ({format_value(paper, records[0]['metric'])})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {records[0]['metric']} (lower is better)")
    ax.set_title(f"{records[0]['task']}: TCN vs LSTM (torchtcn demo)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    with torch_threads(DEMO_THREADS if args.threads is None else args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..report import pyplot, format_value

    pyplot()  # the plot is part of the demo: a missing matplotlib is said before training
    logging.getLogger("torchtcn.train").setLevel(logging.WARNING)  # the table says it all
    records = []
    for model in DEMO_MODELS:
        print(f"training {model} on {DEMO_TASK} ({'preset' if args.epochs is None else args.epochs} epochs) ...", flush=True)
        # the demo is meant to be run again and again: each run replaces the last one
        record, _ = train_one(DEMO_TASK, model, dict(DEMO_OVERRIDES), data_dir=args.data_dir,
                              out=Path(args.out) / model, overwrite=True, quiet=args.quiet,
                              epochs=args.epochs, seed=args.seed, device=args.device,
                              use_tensorboard=False)
        records.append(record)
        if exit_code(record):  # Ctrl-C (or a diverged run): stop here, not train the next model
            break
    metric = records[0]["metric"]
    print(f"\n{DEMO_TASK}: test {metric} (lower is better), best-validation model of each run\n")
    print(f"{'model':<6} {'params':>9} {'epochs':>6} {'test':>8} {'paper':>8} {'seconds':>8}  run")
    for r in records:
        status = "complete" if r["complete"] else f"INCOMPLETE ({r['stop_reason']})"
        print(f"{r['model']:<6} {r['params']:>9,} {r['epochs']:>6} {format_value(r['value'], metric):>8} "
              f"{format_value(r['paper_model'], metric):>8} {r['wall_seconds']:>8.0f}  {status}")
    path = plot_demo(records, Path(args.out) / "demo.png")
    print(f"\nplot: {path}   (paper numbers: {records[0]['paper_note']}, after full training)")
    return exit_code(records[-1])
