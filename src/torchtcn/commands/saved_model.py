"""Where a command reads a trained model from: a model file, a training checkpoint or a run
folder (``torchtcn train --out``), so that every command accepts the same three."""

from __future__ import annotations

from pathlib import Path

from torch import nn


def resolve_model_path(path) -> Path:
    """``path`` itself, or for a run folder its ``model.safetensors`` (written when the run
    ends), else its ``best.ckpt``, else its ``last.ckpt``.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder holding none of those files.
    """
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"no model at {path}")
        return path
    for name in ("model.safetensors", "best.ckpt", "last.ckpt"):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path} is a folder without model.safetensors, best.ckpt or "
                            "last.ckpt: give a model file, a checkpoint or a run folder")


def load_saved_model(path) -> nn.Module:
    """The model at ``path`` (see :func:`resolve_model_path`); a checkpoint gives the model it
    would be evaluated with (its weight average, when the run kept one)."""
    path = resolve_model_path(path)
    if path.suffix == ".ckpt":
        from ..checkpoint import load_checkpoint

        return load_checkpoint(path).inference_model
    from ..io import load

    return load(path)
