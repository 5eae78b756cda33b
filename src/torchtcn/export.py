"""Export a model, and its streaming step, to ONNX and TorchScript.

Two artefacts for deployment outside Python:

* the **full model** (``export_onnx``): (N, C_in, T) -> (N, C_out, T), N and T dynamic;
* the **streaming step** (``export_step_onnx``, ``export_step_torchscript``): a pure function
  ``(x, state[, age]) -> (y, new_state[, new_age])``. The state is an explicit tensor
  (N, C_max, slots) holding, for every convolution (and, in non-causal models, every delay
  line), its last ``(k - 1) * d`` inputs in time order; start from zeros
  (:func:`initial_step_state`) and feed each call's ``new_state`` to the next call. Non-causal
  models also carry ``age`` (N,) int64, the frames each stream has seen (zeros at the start);
  their outputs lag by ``stream_delay`` frames exactly as :meth:`TCN.step`'s do.

The step module uses the same folded weights as :mod:`torchtcn.streaming` but a shift-buffer
formulation (``cat`` + ``conv1d``), which exports to plain ONNX operators.

Example:
    >>> import tempfile, os, torch, torchtcn
    >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3).eval()
    >>> d = tempfile.mkdtemp()
    >>> export_step_onnx(model, os.path.join(d, "step.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import streaming
from .model import TCN

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def _require_tcn(model) -> TCN:
    if not isinstance(model, TCN):
        raise TypeError(f"the streaming step exports a TCN, got {type(model).__name__}")
    return model


class StepModule(nn.Module):
    """The streaming step of a TCN as a pure function of explicit tensors.

    ``forward(x, state)`` (causal) or ``forward(x, state, age)`` (non-causal):
    x (N, C_in, t) (or NLC), state (N, C_max, slots), age (N,) int64 ->
    y (N, C_out, t), new_state, [new_age]. Weights are folded once at construction.

    Example:
        >>> model = TCN(1, [8, 8], kernel_size=3).eval()
        >>> step = StepModule(model)
        >>> y, s = step(torch.randn(2, 1, 1), initial_step_state(model, 2)[0])
        >>> y.shape, s.shape
        (torch.Size([2, 8, 1]), torch.Size([2, 8, 12]))
    """

    def __init__(self, model: TCN):
        super().__init__()
        _require_tcn(model)
        was_training = model.training
        model.eval()  # the exported step is inference: eval-mode norms, no dropout
        try:
            self.plan = streaming.prepare(model)
        finally:
            model.train(was_training)

    @property
    def causal(self) -> bool:
        return self.plan.delay == 0

    def forward(self, x: torch.Tensor, state: torch.Tensor, age: torch.Tensor | None = None):
        plan = self.plan
        h = x if plan.layout == "NCL" else x.transpose(1, 2)
        t = h.shape[2]
        new_lines: dict[int, torch.Tensor] = {}
        masks = {}
        if not self.causal:
            if age is None:
                raise ValueError("a non-causal model's step needs age (N,) int64")
            frames = age[:, None] + torch.arange(t, device=x.device)[None, :]  # (N, t)
            for d in {0, plan.delay, *plan.mask_delays}:
                masks[d] = (frames >= d).to(h.dtype)[:, None, :]

        def window(line, inp):
            p, c = line.span, inp.shape[1]
            if p == 0:
                return inp
            win = torch.cat([state[:, :c, line.slot : line.slot + p], inp], 2)
            new_lines[line.slot] = F.pad(win[:, :, -p:], (0, 0, 0, plan.c_max - c))
            return win

        def unit(conv, inp):
            if conv.line.in_delay:
                inp = inp * masks[conv.line.in_delay]
            z = F.conv1d(window(conv.line, inp), conv.weight, conv.bias, dilation=conv.dilation)
            # channel ops work on channel dim -2: (N, C, t) -> (N, t, C) -> back
            return streaming._channel_ops(conv, z)  # channel dim -2 of (N, C, t)

        skip_sum = None
        for b in plan.blocks:
            u = unit(b.conv2, unit(b.conv1, h))
            res = h if b.down is None else F.conv1d(h, b.down[0][:, :, None], b.down[1])
            if b.res_delay is not None:
                res = window(b.res_delay, res)[:, :, :t]
            h = u + res
            if b.out_act is not None:
                h = b.out_act(h)
            if plan.has_skips:
                s = h if b.skip is None else F.conv1d(h, b.skip[0][:, :, None], b.skip[1])
                if b.skip_delay is not None:
                    s = window(b.skip_delay, s)[:, :, :t]
                skip_sum = s if skip_sum is None else skip_sum + s
        if skip_sum is not None:
            h = skip_sum if plan.skip_act is None else plan.skip_act(skip_sum)
        if masks:
            h = h * masks[plan.delay]
        if new_lines:
            new_state = torch.cat([new_lines[k] for k in sorted(new_lines)], 2)
        else:
            new_state = state
        y = h if plan.layout == "NCL" else h.transpose(1, 2)
        if self.causal:
            return y, new_state
        return y, new_state, age + t


def initial_step_state(model: TCN, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Zero state for the exported step: ``(state,)`` for causal models, ``(state, age)``
    otherwise; state (N, C_max, slots) in the model's dtype, age (N,) int64."""
    plan = StepModule(model).plan
    p = next(model.parameters())
    state = torch.zeros(batch_size, plan.c_max, plan.slots, dtype=p.dtype, device=p.device)
    if plan.delay == 0:
        return (state,)
    return state, torch.zeros(batch_size, dtype=torch.long, device=p.device)


def _example_input(model, batch_size: int, length: int) -> torch.Tensor:
    p = next(model.parameters())
    if hasattr(model, "embedding"):  # language model: tokens
        return torch.zeros(batch_size, length, dtype=torch.long, device=p.device)
    body = getattr(model, "body", model)
    shape = (batch_size, body.in_channels, length)
    if body.layout == "NLC":
        shape = (batch_size, length, body.in_channels)
    return torch.randn(shape, dtype=p.dtype, device=p.device)


def _onnx_export(module, args, path, input_names, output_names, dynamic_axes, opset) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy (TorchScript-based) exporter is deprecated in favour of dynamo=True, but it
        # handles these small graphs reliably and needs no extra dependency.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    log.info("wrote %s", path)
    return path


def export_onnx(model: nn.Module, path, opset: int = DEFAULT_OPSET) -> Path:
    """The full model as ONNX: input ``"x"`` -> output ``"y"``, batch and time dynamic.

    Works for a TCN, a :class:`~torchtcn.SequenceModel` and a
    :class:`~torchtcn.LanguageModel` (input: int64 tokens (N, T)). The model is exported in
    eval mode (its mode is restored afterwards).
    """
    was_training = model.training
    model.eval()
    try:
        x = _example_input(model, 2, 16)
        body = getattr(model, "body", model)
        t_axis = 1 if x.dim() == 2 or body.layout == "NLC" else 2
        out_t = None if getattr(model, "head", None) is not None and not model.head.returns_sequence else 2
        if isinstance(model, TCN) and model.layout == "NLC":
            out_t = 1
        y_axes = {0: "batch"} if out_t is None else {0: "batch", out_t: "time"}
        return _onnx_export(
            model, (x,), path, ["x"], ["y"],
            {"x": {0: "batch", t_axis: "time"}, "y": y_axes}, opset,
        )
    finally:
        model.train(was_training)


def export_step_onnx(
    model: TCN, path, batch_size: int = 1, chunk: int = 1, opset: int = DEFAULT_OPSET
) -> Path:
    """The streaming step as ONNX: inputs ``x``, ``state`` (and ``age``), outputs ``y``,
    ``new_state`` (and ``new_age``); see :class:`StepModule`. Batch is dynamic; the chunk
    length is dynamic for causal models and fixed to ``chunk`` for non-causal ones."""
    step = StepModule(model).eval()
    init = initial_step_state(model, batch_size)
    x = _example_input(model, batch_size, chunk)
    t_axis = 2 if model.layout == "NCL" else 1
    names_in, names_out = ["x", "state"], ["y", "new_state"]
    axes = {"x": {0: "batch"}, "y": {0: "batch"}, "state": {0: "batch"}, "new_state": {0: "batch"}}
    if step.causal:
        axes["x"][t_axis] = axes["y"][t_axis] = "time"
    else:
        names_in.append("age")
        names_out.append("new_age")
        axes["age"] = axes["new_age"] = {0: "batch"}
    return _onnx_export(step, (x, *init), path, names_in, names_out, axes, opset)


def export_step_torchscript(model: TCN, path, batch_size: int = 1, chunk: int = 1) -> Path:
    """The streaming step as a traced TorchScript module (``torch.jit.load(path)``); same
    signature as :class:`StepModule`. Traced at ``chunk`` frames per call."""
    step = StepModule(model).eval()
    example = (_example_input(model, batch_size, chunk), *initial_step_state(model, batch_size))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(step, example, check_trace=False)
        traced.save(str(path))
    log.info("wrote %s", path)
    return path


def export_step_program(model: TCN, path, batch_size: int = 2, chunk: int = 1) -> Path:
    """The streaming step as a ``torch.export`` program (``.pt2``; load with
    ``torch.export.load(path).module()``), batch dynamic, ``chunk`` frames per call; same
    signature as :class:`StepModule`."""
    step = StepModule(model).eval()
    init = initial_step_state(model, batch_size)
    example = (_example_input(model, batch_size, chunk), *init)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in example)
    program = torch.export.export(step, example, dynamic_shapes=dynamic)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    log.info("wrote %s", path)
    return path
