"""``torchtcn train TASK --model M [key=value ...]``: train a registered task with its preset.

Settings come from the task's preset (the paper's), then ``key=value`` overrides (any trainer
setting, data setting or model argument; an unknown key is an error listing the valid ones).
The run folder (``--out``, default ``runs/<task>-<model>``) receives ``last.ckpt``,
``best.ckpt``, ``model.safetensors``, ``metrics.csv``/``.jsonl``, ``curves.png`` and the
result ``<task>-<model>.json``; ``--results-dir`` also writes the result there.

A language model's ``model.safetensors`` carries its vocabulary (metadata
``torchtcn.vocabulary``: the symbols in id order, as JSON; read it with
:func:`torchtcn.io.read_metadata`), and its checkpoints a signature of it: the vocabulary is
rebuilt from the text files at every load, so ``eval`` and ``--resume`` refuse files that
give another (edited files would silently remap the ids).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path

from .config_args import positive_int

logger = logging.getLogger(__name__)


class _OverrideParser(argparse.ArgumentParser):
    """Collects ``key=value`` words wherever they appear (argparse cannot interleave a
    variable-length positional list with options)."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        task = getattr(ns, "task", None)
        if isinstance(task, str) and "=" in task:  # `train lr=0.1 jsb`: the task comes first
            self.error(f"the task name comes first, then key=value settings (torchtcn "
                       f"{self.prog.split()[-1]} TASK {task} ...); got {task!r} where the task "
                       "name goes")
        words = [e for e in extras if "=" in e and not e.startswith("-")]
        rest = [e for e in extras if e not in words]
        ns.overrides = list(getattr(ns, "overrides", None) or []) + words
        return ns, rest


def parse_overrides(words: list[str]) -> dict[str, str]:
    """``["lr=0.1", "channels=25*8"]`` -> ``{"lr": "0.1", "channels": "25*8"}``."""
    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"overrides must look like key=value, got {w!r}")
        if key in out:
            raise ValueError(f"setting {key!r} given twice")
        out[key] = value
    return out


def add_common_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``demo``."""
    p.add_argument("--data-dir", default=None,
                   help="data directory (default: $TORCHTCN_DATA, else ./data or ../shared/data)")
    p.add_argument("--device", default=None, type=device_name,
                   help="cpu, cuda, cuda:N or auto (default: the preset's, auto = CUDA when "
                   "available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for the command (see :func:`torch_threads`)."""
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's, one per physical core). On a "
                   "machine busy with other jobs, fewer threads than cores is often much faster")


def device_name(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, found {text!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the body with torch's intra-op thread count set to ``threads`` (None: torch's own),
    restored afterwards, so that calling ``main`` in-process leaves the caller's setting alone."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(before)


def add_parser(sub) -> None:
    from ..tasks import available_tasks

    p = sub.add_parser(
        "train", help="train a benchmark task (the paper's settings; key=value overrides)",
        usage="torchtcn train TASK [--model tcn|lstm|gru|rnn] [options] [KEY=VALUE ...]",
        description="Train TASK with the paper's preset. Tasks: " + ", ".join(available_tasks())
        + ". Any trainer, data or model setting can be overridden with key=value, e.g. "
        "torchtcn train jsb --model tcn epochs=5 lr=1e-3 channels=150*2",
    )
    p.__class__ = _OverrideParser
    p.add_argument("task", help="task name (" + ", ".join(available_tasks()) + ")")
    p.add_argument("--model", default="tcn", help="tcn | lstm | gru | rnn (default tcn)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the preset's, 1111)")
    p.add_argument("--data", default=None, help="data file/folder for music, char_lm, word_lm, "
                   "text8, wikitext103, lambada, series (a CSV file)")
    p.add_argument("--download", action="store_true",
                   help="download the task's data set into the data folder if it is missing "
                   "(needs internet access; see torchtcn download)")
    p.add_argument("--out", default=None, help="run folder (default runs/<task>-<model>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/last.ckpt (an empty folder: a new run; one with "
                   "best.ckpt but no last.ckpt is refused)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run folder that already holds checkpoints (replacing "
                   "them, its result and its plot)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (complete: false)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop after this many seconds (complete: false)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    p.add_argument("--results-dir", default=None,
                   help="also write <task>-<model>.json here (e.g. benchmarks/results)")
    p.add_argument("--no-tensorboard", action="store_true", help="don't log to TensorBoard")
    p.add_argument("--show-settings", action="store_true",
                   help="print every setting of the run (preset + overrides) and exit without "
                   "training (trainer and model values are checked; data values when loaded)")
    add_common_run_arguments(p)
    p.set_defaults(func=run, overrides=[])


def format_settings(spec) -> str:
    """The resolved settings of a run, one ``key=value`` per line, grouped, each with its
    help: what ``--show-settings`` prints, and valid command-line overrides as written."""
    import dataclasses

    from ..tasks import get_task
    from ..tasks.base import DATA_HELP
    from ..train import TrainConfig

    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}

    def text(v):
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    def described(settings: dict, help_of: dict) -> list[str]:
        width = max((len(f"{k}={text(v)}") for k, v in settings.items()), default=0)
        return [f"{k}={text(v)}".ljust(width) + f"  # {help_of[k]}" if help_of.get(k) else f"{k}={text(v)}"
                for k, v in settings.items()]

    d = spec.to_dict()
    task = get_task(d["task"])
    model_help = task.model_help(d["model"])
    unset = {k: v for k, v in task.model_defaults(d["model"]).items() if k not in d["model_kwargs"]}
    defaults = ["# model settings the preset leaves at their defaults (override as key=value):",
                *(f"#   {line}" for line in described(unset, model_help))] if unset else []
    return "\n".join([f"# {d['task']} / {d['model']}", "# trainer", *described(d["train"], helps),
                      "# data", *described(d["data"], DATA_HELP),
                      "# model", *described(d["model_kwargs"], model_help), *defaults])


def train_one(task: str, model: str, overrides: dict[str, str], *, data_dir=None, out=None,
              resume: bool = False, overwrite: bool = False, quiet: bool = False, results_dir=None,
              ctx=None, use_tensorboard: bool = True, download: bool = False, **train_overrides):
    """Build, train, test and record one run; returns ``(result record, run folder)``.

    Shared by ``torchtcn train`` and ``torchtcn demo`` so both go through the same task
    registry and the same :class:`~torchtcn.train.Trainer`. A fresh run (no ``resume``) into a
    folder that already holds a run's checkpoints is refused unless ``overwrite``. With
    ``download``, missing data of the task is fetched (:func:`torchtcn.data.download.download`)
    and the run built again.
    """
    from .. import distributed as D
    from ..report import make_result, write_result
    from ..summary import count_parameters
    from ..tasks import build_run, get_task
    from ..train import Trainer, hardware_description

    spec = get_task(task).resolve(model, overrides, **train_overrides)  # bad settings first
    if results_dir is not None:  # written after training: unwritable must fail now
        D.check_on_main(lambda: _check_results_dir(results_dir), ctx or D.DistributedContext())
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder and --overwrite starts it "
                         "over: give one of them")
    out = Path(out) if out is not None else Path("runs") / f"{task}-{model}"
    held = [name for name in ("last.ckpt", "best.ckpt") if (out / name).exists()]
    if held and not (resume or overwrite):
        raise ValueError(f"{out} already holds a run ({', '.join(held)}): --resume continues it, "
                         "--overwrite starts it over (replacing its checkpoints), --out DIR trains "
                         "into another folder")
    if resume and held == ["best.ckpt"]:  # resuming "from scratch" would replace that run
        raise ValueError(f"{out} holds best.ckpt but no last.ckpt to resume from: put last.ckpt "
                         "back, or start over with --overwrite")
    try:
        run = build_run(task, model, overrides, data_dir=data_dir, **train_overrides)
    except FileNotFoundError:
        sets = get_task(task).downloads_for(spec.data)
        if not (download and sets):
            raise
        from ..data.download import download as fetch
        from ..data.paths import resolve_data_dir

        for name in sets:
            logger.info("downloading %s into %s", name, resolve_data_dir(data_dir))
            fetch(name, resolve_data_dir(data_dir))
        run = build_run(task, model, overrides, data_dir=data_dir, **train_overrides)
    params = count_parameters(run.model)
    rf = getattr(run.model, "receptive_field", None)
    sizes = {s: len(d) for s, d in run.datasets.items()}
    logger.info("%s / %s: %s parameters, receptive field %s, examples %s -> %s", task, model,
                f"{params:,}", "unbounded" if rf is None else rf, sizes, out)
    trainer = Trainer(run.task, run.model, run.datasets, run.spec.train, out, run_info=run.spec.to_dict(),
                      ctx=ctx, quiet=quiet, use_tensorboard=use_tensorboard)
    if held and overwrite and not resume and trainer.is_main:
        # only now that the new run is built: a bad setting or missing data keeps the old one
        old_outputs = ("model.safetensors", "curves.png")
        stale = held + [n for n in old_outputs if (out / n).exists()] + _earlier_results(out)
        for name in stale:
            (out / name).unlink()
        logger.info("--overwrite: removed the earlier run's %s", ", ".join(stale))
    fit = trainer.fit(resume=resume)
    record = make_result(run.task, run.spec, fit, params=params, hardware=hardware_description(trainer.device))
    if trainer.is_main:
        write_result(record, out)  # out/<task>-<model>.json beside the checkpoints
        if results_dir is not None:
            write_result(record, results_dir)
    return record, out


def _check_results_dir(folder) -> None:
    from ..checkpoint import check_output_dir

    try:
        check_output_dir(folder, what="the result")
    except ValueError as e:
        raise ValueError(f"--results-dir: {e}") from None


def _earlier_results(out: Path) -> list[str]:
    """The result files (``<task>-<model>.json``) in run folder ``out``, of any task and model:
    an --overwrite run may train another model into the same folder."""
    from ..registry import available_models
    from ..tasks import available_tasks

    names = {f"{t}-{m}.json" for t in available_tasks() for m in available_models()}
    return sorted(p.name for p in out.glob("*-*.json") if p.name in names)


def data_path(value: str, data_dir=None) -> str:
    """``--data`` as the run records it: an existing path made absolute (``eval`` and
    ``--resume`` from another folder find it), else the same name under the data directory if
    it is there, else as given (a named set such as ``Nottingham``, or a path the loader
    reports missing)."""
    from ..data.paths import candidate_data_dirs, resolve_data_dir

    if value.lower() == "none":
        return value
    if not value.strip():  # Path("") is the working directory, which exists
        raise ValueError("data is empty: give a file or folder (--data PATH or data=PATH)")
    path = Path(value).expanduser()
    if path.exists():
        return str(path.resolve())
    if not path.is_absolute():
        roots = [resolve_data_dir(data_dir)] if data_dir is not None else [
            resolve_data_dir(), *candidate_data_dirs()]
        for root in roots:
            if (root / path).exists():
                return str((root / path).resolve())
    return value


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .. import distributed as D
    from ..report import format_value

    overrides = parse_overrides(args.overrides)
    if args.data is not None:
        if "data" in overrides:
            raise ValueError(f"data given twice: as data={overrides['data']} and as --data "
                             f"{args.data}; give it once")
        overrides["data"] = args.data
    if overrides.get("data") is not None:
        overrides["data"] = data_path(overrides["data"], args.data_dir)
    # trainer settings set by flags rather than key=value (None: the preset's)
    flags = {"epochs": args.epochs, "seed": args.seed, "device": args.device, "max_steps": args.max_steps,
             "time_limit": args.time_limit, "checkpoint_every": args.checkpoint_every}
    for key, value in flags.items():
        if value is not None and key in overrides:  # e.g. epochs=5 --epochs 2: which one?
            raise ValueError(f"{key} given twice: as {key}={overrides[key]} and as "
                             f"--{key.replace('_', '-')} {value}; give it once")
    if args.show_settings:
        from ..tasks import get_task

        print(format_settings(get_task(args.task).resolve(args.model, overrides, **flags)))
        return 0
    ctx = None
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        device = None if args.device in (None, "auto") else args.device
        ctx = D.setup(device)
    failed = True
    try:
        record, out = train_one(
            args.task, args.model, overrides, data_dir=args.data_dir, out=args.out, resume=args.resume,
            overwrite=args.overwrite, download=args.download,
            quiet=args.quiet, results_dir=args.results_dir, ctx=ctx, use_tensorboard=not args.no_tensorboard,
            **flags)
        failed = False
    finally:
        if ctx is not None:
            D.cleanup(ctx, wait_for_others=not failed)
    if ctx is None or ctx.is_main:
        metric = record["metric"]
        status = "complete" if record["complete"] else "INCOMPLETE"
        if record["stop_reason"]:
            status += f" ({record['stop_reason']})"
        print(f"{record['task']} / {record['model']}: test {metric} = {format_value(record['value'], metric)} "
              f"(paper: {format_value(record['paper_model'], metric)}, paper TCN: "
              f"{format_value(record['paper_tcn'], metric)}); {record['epochs']} epochs, "
              f"{record['params']:,} params, {record['wall_seconds']:.0f} s; {status}; run folder {out}")
        for key in record:
            if key.startswith("value_last"):
                print(f"  mean test {metric} of the last {record['last_k_epochs']} epochs: "
                      f"{format_value(record[key], metric)}")
    return exit_code(record)


def exit_code(record: dict) -> int:
    """The command's exit status for a run's result: 1 for a non-finite loss, the shell's
    128 + signal number for a run stopped by SIGINT / SIGTERM (checkpoint and result saved),
    so that ``torchtcn train ... && next`` does not go on as if it had finished; else 0."""
    reason = record["stop_reason"] or ""
    if "non-finite" in reason:
        return 1
    for name, code in (("SIGINT", 130), ("SIGTERM", 143)):
        if reason == f"stopped by {name}":
            return code
    return 0
