"""``torchtcn eval CHECKPOINT``: evaluate a training checkpoint on its task's data.

The checkpoint carries its task, settings and model, so nothing else is needed. Nothing is
written: a corrupted checkpoint gives a clear error and leaves every file as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .train import add_threads_argument, device_name, torch_threads


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (best.ckpt / last.ckpt) on its task",
                       description="Evaluate CHECKPOINT (a .ckpt file, or a run folder: its "
                       "best.ckpt, or last.ckpt when the run has not validated yet).")
    p.add_argument("checkpoint", help="a .ckpt written by torchtcn train, or its run folder")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="the split to score (default: test)")
    p.add_argument("--data-dir", default=None, help="data directory (default: as for train)")
    p.add_argument("--device", default="auto", type=device_name, help="cpu, cuda, cuda:N or auto")
    add_threads_argument(p)
    p.set_defaults(func=run)


def evaluate_checkpoint(path, split: str = "test", data_dir=None, device: str = "auto") -> dict:
    """``{"task", "model", "split", "metrics"}`` of the checkpoint at ``path`` on ``split``."""
    from ..checkpoint import load_checkpoint, read_checkpoint_state
    from ..tasks import RunSpec, get_task
    from ..train import Trainer, config_from_dict, signature_mismatch

    path = Path(path)
    if path.is_dir():
        # a run stopped before it validated has only last.ckpt: score that one
        path = path / "best.ckpt" if (path / "best.ckpt").exists() or not (
            path / "last.ckpt").exists() else path / "last.ckpt"
    doc = read_checkpoint_state(path)
    trainer = doc.get("trainer") or {}
    info = trainer.get("run") or {} if isinstance(trainer, dict) else None
    if not isinstance(info, dict) or not {"task", "model", "train", "data"} <= set(info):
        raise ValueError(f"{path}: the checkpoint does not record its task (written outside torchtcn train?)")
    for key, kind, what in (("task", str, "a name"), ("model", str, "a name"),
                            ("train", dict, "an object"), ("data", dict, "an object")):
        if not isinstance(info[key], kind):
            raise ValueError(f"{path}: the checkpoint's run.{key} must be {what}, found "
                             f"{type(info[key]).__name__}")
    task = get_task(info["task"])
    # ema off: the checkpoint's inference_model already is the average to score
    train = config_from_dict({**info["train"], "device": device, "ema": None})
    data = task.stored_data_settings(info["data"])
    spec = RunSpec(info["task"], info["model"], train, data, info.get("model_kwargs", {}))
    ckpt = load_checkpoint(path)
    datasets = task.load(spec, data_dir)
    changed = signature_mismatch((doc.get("trainer") or {}).get("data_signature"),
                                 task.data_signature(datasets))
    if changed:  # e.g. edited text files: a rebuilt vocabulary maps the words to other ids
        raise ValueError(f"{path}: the data now differs from the data the model was trained on "
                         f"({changed}); evaluate on the original files")
    trainer = Trainer(task, ckpt.inference_model, datasets, train, None, quiet=True)
    return {"task": task.name, "model": spec.model, "split": split, "metric": task.metric,
            "metrics": trainer.evaluate(split)}


def run(args: argparse.Namespace) -> int:
    from ..report import format_value

    with torch_threads(args.threads):
        out = evaluate_checkpoint(args.checkpoint, args.split, args.data_dir, args.device)
    metrics = "  ".join(f"{k}={format_value(v, k)}" for k, v in out["metrics"].items())
    print(f"{out['task']} / {out['model']} on {out['split']}: {metrics}")
    return 0
