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
)
from ..io import load
from ..model import TCN

ARTEFACTS = ("model", "step", "torchscript", "program")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a saved model to ONNX (model, streaming step), TorchScript and "
        "torch.export (step)",
        description="Writes OUT/model.onnx (the full model), and for a TCN OUT/step.onnx, "
        "OUT/step.pt (TorchScript) and OUT/step.pt2 (torch.export): the streaming step with "
        "its state as explicit input and output (see docs/streaming.md). "
        "Example: torchtcn export model.safetensors exported/",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", help="a model saved with torchtcn.save (.safetensors)")
    p.add_argument("out", help="output directory")
    p.add_argument(
        "--what",
        default=",".join(ARTEFACTS),
        help=f"comma-separated artefacts among {','.join(ARTEFACTS)}",
    )
    p.add_argument("--batch-size", type=int, default=1, help="example batch of the step")
    p.add_argument("--chunk", type=int, default=1, help="frames per step call (example)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = sorted(set(what) - set(ARTEFACTS))
    if unknown:
        raise ValueError(f"--what must list artefacts among {list(ARTEFACTS)}, got {unknown}")
    model = load(args.path).eval()
    out = Path(args.out)
    written = []
    if "model" in what:
        written.append(export_onnx(model, out / "model.onnx", opset=args.opset))
    step_wanted = {"step", "torchscript", "program"} & set(what)
    if step_wanted and not isinstance(model, TCN):
        raise ValueError(
            f"the streaming step exports a TCN, found {type(model).__name__}; "
            f"use --what model"
        )
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
        print(path)
    return 0
