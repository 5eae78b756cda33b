"""``torchtcn export``: a saved model to ONNX (full model and streaming step) and TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import (
    DEFAULT_OPSET,
    export_onnx,
    export_step_onnx,
    export_step_program,
    export_step_torchscript,
    export_torchscript,
    require_onnx,
    step_body,
)
from .saved_model import load_saved_model
from .train import positive_int

ARTEFACTS = ("model", "model_torchscript", "step", "torchscript", "program")
STEP_ARTEFACTS = ("step", "torchscript", "program")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a saved model to ONNX (model, streaming step), TorchScript (model, "
        "step) and torch.export (step)",
        description="Writes OUT/model.onnx and OUT/model.pt (TorchScript): the full model, "
        "and for a TCN or LSTM/GRU/RNN (bare, or the body of a SequenceModel with a per-step "
        "or last-step head or of a LanguageModel) OUT/step.onnx, "
        "OUT/step.pt (TorchScript) and OUT/step.pt2 (torch.export): the streaming step with "
        "its state as explicit input and output (see docs/streaming.md). "
        "Example: torchtcn export model.safetensors exported/",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", help="a model saved with torchtcn.save (.safetensors), a training "
                   "checkpoint (.ckpt) or a run folder (its model.safetensors, else best.ckpt)")
    p.add_argument("out", help="output directory")
    p.add_argument(
        "--what",
        default=None,
        help=f"comma-separated artefacts among {','.join(ARTEFACTS)} (none: all that apply "
        "to the model; model and model_torchscript are the full model as ONNX and "
        "TorchScript, step / torchscript / program the streaming step as ONNX, TorchScript "
        "and torch.export)",
    )
    p.add_argument("--batch-size", type=positive_int, default=1, help="example batch of the step")
    p.add_argument("--chunk", type=positive_int, default=1, help="frames per step call (example)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_saved_model(args.path).eval()
    what = _artefacts(args.what, model)
    if {"model", "step"} & set(what):
        try:
            require_onnx()  # before anything is written
        except ImportError as e:
            raise ImportError(f"{e}; --what model_torchscript,torchscript,program writes the "
                              "TorchScript and torch.export files without it") from None
    out = Path(args.out)
    written = []
    if "model" in what:
        written.append(export_onnx(model, out / "model.onnx", opset=args.opset))
    if "model_torchscript" in what:
        written.append(export_torchscript(model, out / "model.pt"))
    if "step" in what:
        written.append(
            export_step_onnx(model, out / "step.onnx", args.batch_size, args.chunk, args.opset)
        )
    if "torchscript" in what:
        written.append(export_step_torchscript(model, out / "step.pt", args.batch_size, args.chunk))
    if "program" in what:
        batch = max(args.batch_size, 2)  # torch.export specialises a batch of 1
        written.append(export_step_program(model, out / "step.pt2", batch, args.chunk))
    for path in written:
        print(f"wrote {path}")
    return 0


def _artefacts(what: str | None, model) -> list[str]:
    """The artefacts to write, checked before anything is: ``--what`` as given, or by default
    every artefact that applies to ``model`` (the step ones only when its step exports)."""
    try:
        step_body(model)
        step_error = None
    except TypeError as e:
        step_error = e
    if what is None:
        if step_error is not None:
            print(f"note: exporting the full model only ({step_error})")
            return ["model", "model_torchscript"]
        return list(ARTEFACTS)
    wanted = [w.strip() for w in what.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(ARTEFACTS))
    if unknown or not wanted:
        raise ValueError(f"--what must list artefacts among {list(ARTEFACTS)}, got {unknown or what!r}")
    if step_error is not None and set(wanted) & set(STEP_ARTEFACTS):
        raise ValueError(f"{step_error}; use --what model,model_torchscript")
    return wanted
