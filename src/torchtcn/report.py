"""Benchmark results: one JSON per run, the markdown table beside the paper, and the plots.

A result file (``benchmarks/results/<task>-<model>.json``) records what a run measured on
the test set and how: the metric and its direction, the paper's numbers, the parameter count,
the seed, the epochs done, the wall time, the hardware, the full settings and the learning
curve, and ``complete: false`` when the run stopped before its planned epochs. Nothing in
the table is typed in by hand: every number comes from a result file or from the task
registry's record of the paper.

Example:
    >>> print(markdown_table([]))
    _No results yet: run `torchtcn train TASK --model MODEL --results-dir benchmarks/results`._
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from .metrics import strict_json

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("task", "model", "metric", "value", "paper_tcn", "higher_is_better", "epochs",
                 "params", "seed", "wall_seconds", "hardware", "complete")
MODEL_ORDER = ("tcn", "lstm", "gru", "rnn")


def make_result(task, spec, fit, *, params: int, hardware: str) -> dict[str, Any]:
    """The result record of a finished (or stopped) run.

    Args:
        task: the :class:`~torchtcn.tasks.Task`.
        spec: its :class:`~torchtcn.tasks.RunSpec`.
        fit: the trainer's :class:`~torchtcn.train.FitResult`.
        params: trainable parameters of the model.
        hardware: what ran it (:func:`torchtcn.train.hardware_description`).
    """
    import torch

    from . import __version__

    metric = task.metric
    record: dict[str, Any] = {
        "task": task.name,
        "model": spec.model,
        "metric": metric,
        "value": fit.test[metric],
        "paper_tcn": task.paper.tcn,
        "paper_model": task.paper.get(spec.model),
        "paper_size": task.paper.size,
        "paper_note": task.paper.note,
        "higher_is_better": task.higher_is_better,
        "epochs": fit.epochs,
        "epochs_planned": spec.train.epochs,
        "steps": fit.steps,
        "params": params,
        "seed": spec.train.seed,
        "wall_seconds": round(fit.wall_seconds, 1),
        "hardware": hardware,
        "complete": fit.complete,
        "stop_reason": fit.stop_reason,
        "best_valid": fit.best_valid,
        "best_epoch": fit.best_epoch,
        "test": fit.test,
        "settings": spec.to_dict(),
        "history": fit.history,
        "torch": torch.__version__,
        "torchtcn": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    k = task.report_last_k
    if k and len(fit.test_history) >= 1:
        last = fit.test_history[-k:]
        record[f"value_last{k}_mean"] = sum(last) / len(last)
        record["last_k_epochs"] = len(last)
    return record


def result_path(results_dir, task: str, model: str) -> Path:
    return Path(results_dir) / f"{task}-{model}.json"


def write_result(record: dict[str, Any], results_dir) -> Path:
    """Write ``record`` to ``<results_dir>/<task>-<model>.json`` atomically."""
    from .checkpoint import atomic_write_bytes

    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"result record is missing {missing}")
    path = result_path(results_dir, record["task"], record["model"])
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict_json(record), indent=1, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
    return path


#: the type each result key must have (a real number may also be null: a run without a test value)
_REAL = (int, float)
KEY_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # key: (types, null allowed)
    "task": ((str,), False), "model": ((str,), False), "metric": ((str,), False),
    "hardware": ((str,), False), "value": (_REAL, True), "paper_tcn": (_REAL, True),
    "paper_model": (_REAL, True), "wall_seconds": (_REAL, False),
    "higher_is_better": ((bool,), False), "complete": ((bool,), False),
    "epochs": ((int,), False), "params": ((int,), False), "seed": ((int,), False),
    "epochs_planned": ((int,), False), "history": ((list,), True),
}


def _refuse_non_finite(constant: str):
    raise ValueError(f"the non-finite number {constant} (result files hold null instead)")


def _float_sized_int(text: str) -> int:
    value = int(text)
    try:
        float(value)
    except OverflowError:  # the table formats it as a float
        _refuse_non_finite(f"{text[:12]}... ({len(text)} digits)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf
        _refuse_non_finite(text)
    return value


def _read_result(path: Path) -> dict[str, Any]:
    """One result file, checked: JSON, an object, the required keys with the right types,
    and named as its content says (``<task>-<model>.json``)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_non_finite,
                         parse_float=_finite_float, parse_int=_float_sized_int)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a JSON result file ({e})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: a result file holds a JSON object, found {type(rec).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise ValueError(f"{path}: result file lacks {missing}")
    for key, (types, nullable) in KEY_TYPES.items():
        if key not in rec or (rec[key] is None and nullable):
            continue
        value = rec[key]
        # bool is an int to Python, not to a result file
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
            raise ValueError(f"{path}: {key} must be {want}, found {type(value).__name__} {value!r}")
    for i, entry in enumerate(rec.get("history") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int):
            raise ValueError(f"{path}: history[{i}] must be an object with an int 'epoch', "
                             f"found {entry!r:.80}")
    expected = result_path(path.parent, rec["task"], rec["model"]).name
    if path.name != expected:
        raise ValueError(f"{path}: holds the result of {rec['task']} / {rec['model']}, whose "
                         f"file is {expected}: rename it, or move it out of {path.parent}")
    return rec


def load_results(results_dir) -> list[dict[str, Any]]:
    """Every result file of ``results_dir``, sorted by task then model (tcn, lstm, gru, rnn).

    An empty folder gives ``[]``; a missing one is an error, so that a mistyped path (or a
    report run from outside the repository) cannot quietly write an empty table. Hidden files
    (``.name.json``, e.g. macOS's ``._x.json``) are skipped.

    Raises:
        FileNotFoundError / NotADirectoryError: ``results_dir`` is missing or not a folder.
        ValueError: a file is not JSON, lacks a required key, has a key of the wrong type or a
            non-finite number, or is not named ``<task>-<model>.json`` after its content (the
            message names it).
    """
    folder = Path(results_dir)
    if not folder.exists():
        raise FileNotFoundError(f"no results folder at {folder} (write one with "
                                f"`torchtcn train TASK --results-dir {folder}`)")
    if not folder.is_dir():
        raise NotADirectoryError(f"results_dir must be a folder of result JSON files, got the file {folder}")
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        rec = _read_result(path)
        rec["_path"] = str(path)
        out.append(rec)
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(out, key=lambda r: (r["task"], order.get(r["model"], 99), r["model"]))


def format_value(v: float | None, metric: str) -> str:
    """Numbers in fixed widths: 99.01 (accuracy), 8.100 (NLL, bpc), 5.80e-05 (small losses),
    88.68 and 1,279 (perplexities)."""
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if metric == "accuracy":
        return f"{v:.2f}"
    if abs(v) != 0 and abs(v) < 1e-2:
        return f"{v:.2e}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 1:
        return f"{v:.4g}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def compared_value(r: dict[str, Any]) -> float | None:
    """Our number to hold against the paper's: the test value, or, where the paper reports a
    mean over the last k epochs (the adding problem), that mean (``value_last<k>_mean``)."""
    last_k = [r[k] for k in r if k.startswith("value_last") and k.endswith("_mean")]
    return last_k[0] if last_k else r["value"]


def _verdict(r: dict[str, Any]) -> str:
    paper, ours = r.get("paper_model"), compared_value(r)
    if paper is None or ours is None:
        return "–"
    better = ours >= paper if r["higher_is_better"] else ours <= paper
    return "yes" if better else "no"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per run: our test value beside the paper's number for the same model and the
    paper's TCN, with the run's size, epochs, completeness and wall time."""
    if not results:
        return "_No results yet: run `torchtcn train TASK --model MODEL --results-dir benchmarks/results`._"
    header = ("| Task | Metric | Model | Params | Ours (test) | Paper, same model | Paper TCN "
              "| Matches paper? | Epochs | Complete | Wall time |")
    lines = [header, "|" + "---|" * 11]
    for r in results:
        arrow = "↑" if r["higher_is_better"] else "↓"
        ours = format_value(r["value"], r["metric"])
        k_keys = [k for k in r if k.startswith("value_last") and k.endswith("_mean")]
        for k in k_keys:
            ours += f" (last-{r.get('last_k_epochs', '?')} mean {format_value(r[k], r['metric'])})"
        epochs = f"{r['epochs']}/{r.get('epochs_planned', r['epochs'])}"
        lines.append(
            f"| {r['task']} | {r['metric']} {arrow} | {r['model']} | {r['params']:,} | {ours} "
            f"| {format_value(r.get('paper_model'), r['metric'])} | {format_value(r['paper_tcn'], r['metric'])} "
            f"| {_verdict(r)} | {epochs} | {'yes' if r['complete'] else 'no'} | {_duration(r['wall_seconds'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def pyplot():
    """``matplotlib.pyplot`` drawing to files only; an ImportError naming the extra to install
    when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'torchtcn[plot]' (or pip install "
                          "matplotlib)") from e

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write a matplotlib figure as a PNG (creating folders) and release it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def _number(v) -> float:
    """A history value to plot: a gap (NaN) where an epoch has none."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def plot_learning_curves(history: list[dict[str, Any]], metric: str, path, title: str = "") -> Path:
    """Loss (train, valid) and the metric (train, valid, test) per epoch, as a PNG."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    # When the metric is the loss itself (MSE, NLL, cross entropy), one panel says it all.
    same = all(r.get(f"{s}_loss") == r.get(f"{s}_{metric}") for r in history for s in ("train", "valid"))
    keys = [metric] if same else ["loss", metric]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    present = {k for r in history for k in r}  # a split some epochs lack is drawn with gaps
    for ax, key in zip(axes[0], keys):
        for split in ("train", "valid", "test"):
            if f"{split}_{key}" in present:
                ax.plot(epochs, [_number(r.get(f"{split}_{key}")) for r in history], marker=".",
                        label=split)
        ax.set_ylabel(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if key in ("mse", "cross_entropy") and all(
                not _number(r.get(f"valid_{key}", 1)) <= 0 for r in history):  # NaN: a gap
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_comparison(results: list[dict[str, Any]], path) -> Path:
    """One panel per task: our number per model (dots) beside the paper's (crosses).

    Dots, not bars: the small losses need a log axis, where a bar's height means nothing. Our
    number is the one the table compares (:func:`compared_value`).
    """
    plt = pyplot()
    tasks = sorted({r["task"] for r in results})
    n = len(tasks)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        rs = [r for r in results if r["task"] == task]
        xs = list(range(len(rs)))
        ours = [compared_value(r) for r in rs]
        paper = [r.get("paper_model") if r.get("paper_model") is not None else float("nan") for r in rs]
        ax.plot(xs, ours, "o", ms=7, label="ours")
        ax.plot(xs, paper, "x", ms=9, mew=2, c="gray", label="paper")
        ax.set_xticks(xs, [r["model"] + ("" if r["complete"] else "*") for r in rs])
        ax.set_xlim(-0.5, len(rs) - 0.5)
        ax.margins(y=0.2)  # keep the dots off the frame
        arrow = "higher" if rs[0]["higher_is_better"] else "lower"
        ax.set_title(f"{task}: {rs[0]['metric']} ({arrow} is better)", fontsize=9)
        if rs[0]["metric"] in ("mse", "cross_entropy") and all(v is not None and v > 0 for v in ours):
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    # one legend for the figure, above the panels, where it cannot cover a dot
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper right", fontsize=8)
    fig.suptitle("Test vs Bai et al. (2018) Table 1\n(* = stopped early)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def _hardware_notes(results: list[dict[str, Any]]) -> str:
    hw = sorted({r["hardware"] for r in results})
    return "\n".join(f"- {h}" for h in hw)


def _stopped_notes(runs: list[dict[str, Any]]) -> str:
    """One line per run that trained fewer epochs than planned, with its stop reason."""
    lines = [f"- {r['task']} / {r['model']}: {r['epochs']} of {r.get('epochs_planned', '?')} epochs "
             f"({r.get('stop_reason') or 'stopped early'})" for r in runs]
    return "\n".join(lines) or "- none"


#: trainer settings the preset notes leave out: where a run ran and how often it saved (neither
#: changes what is trained), and its planned epochs (the table's epochs column shows them)
UNLISTED_SETTINGS = ("device", "checkpoint_every", "epochs")


def preset_differences(r: dict[str, Any]) -> list[str]:
    """How the settings of result ``r`` differ from what its task and model resolve to now
    (an override, a preset changed since the run, or a time limit or early stopping set for
    the run or at a resume), except :data:`UNLISTED_SETTINGS`.

    Example:
        >>> from torchtcn.tasks import get_task
        >>> spec = get_task("jsb").resolve("tcn", {"lr": "0.01"})
        >>> preset_differences({"task": "jsb", "model": "tcn", "settings": spec.to_dict()})
        ['train.lr: 0.01 -> 0.002']
    """
    from .tasks import get_task
    from .train import run_differences

    try:
        task = get_task(r["task"])
        current = task.resolve(r["model"]).to_dict()
    except ValueError as e:  # the task or model is no longer registered
        return [str(e)]
    stored = dict(r.get("settings") or {})
    if not stored:
        return ["the result file records no settings"]
    stored["data"] = task.stored_data_settings(stored.get("data") or {})
    return run_differences(stored, current, ignore=UNLISTED_SETTINGS)


def _preset_notes(results: list[dict[str, Any]]) -> str:
    lines = [f"- {r['task']} / {r['model']}: {'; '.join(d)}"
             for r in results if (d := preset_differences(r))]
    return "\n".join(lines) or "- none: every row was made with its task's current preset"


def write_report(results_dir, markdown_path, plots_dir, *, intro: str = "", notes: str = "") -> str:
    """Write the markdown report (intro, table, notes, plots) and return its text.

    Args:
        results_dir: folder of result JSON files.
        markdown_path: the report to write (e.g. ``docs/benchmarks.md``); None: don't write.
        plots_dir: where the PNGs go (linked relative to the markdown file); None: no plots.
        intro: text placed before the table.
        notes: text placed after everything else (the methodology).
    """
    results = load_results(results_dir)
    table = markdown_table(results)
    parts = [intro.rstrip() + "\n" if intro else "", "## Results\n", table, ""]
    if results:
        cut_short = [r for r in results if not r["complete"]]
        early_stopped = [r for r in results if r["complete"] and r.get("stop_reason")]
        parts += ["Runs stopped before their planned epochs (`complete: false`):\n", _stopped_notes(cut_short), ""]
        if early_stopped:
            parts += ["Runs ended early by opt-in early stopping (complete: the test number is the best "
                      "validation epoch's, as for a full run):\n", _stopped_notes(early_stopped), ""]
        parts += ["Rows whose settings differ from the current preset (an override, a preset "
                  "changed since the run, or a time limit, `min_lr` or `early_stop` set for the "
                  "run or at a resume; `settings` in the result file has them all):\n",
                  _preset_notes(results), "", "Hardware:\n", _hardware_notes(results), ""]
    if results and plots_dir is not None:
        try:
            parts += _draw_plots(results, Path(plots_dir), markdown_path)
        except ImportError as e:
            logger.warning("%s: the report has no plots", e)
    text = "\n".join(parts)
    if notes:
        text += "\n" + notes
    if markdown_path:
        from .checkpoint import atomic_write_bytes

        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(markdown_path, text.encode())
    return text


def _draw_plots(results: list[dict[str, Any]], plots_dir: Path, markdown_path) -> list[str]:
    """Draw the comparison and the learning curves; the markdown lines linking them, relative
    to the report's folder (or the working folder when there is no report file)."""
    base = Path(markdown_path).resolve().parent if markdown_path else Path.cwd()
    try:
        rel = Path(os.path.relpath(plots_dir.resolve(), base)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        rel = plots_dir.resolve().as_posix()
    plot_comparison(results, plots_dir / "comparison.png")
    lines = ["## Plots\n", f"![comparison]({rel}/comparison.png)", ""]
    for r in results:
        if r.get("history"):
            name = f"curves-{r['task']}-{r['model']}.png"
            plot_learning_curves(r["history"], r["metric"], plots_dir / name,
                                 title=f"{r['task']} / {r['model']}")
            lines.append(f"![{r['task']} {r['model']}]({rel}/{name})")
    return lines + [""]
