"""Export a model, and its streaming step, to ONNX and TorchScript.

Two artefacts for deployment outside Python:

* the **full model** (``export_onnx``): (N, C_in, T) -> (N, C_out, T), N and T dynamic;
* the **streaming step** (``export_step_onnx``, ``export_step_torchscript``,
  ``export_step_program``) of a TCN, or of a SequenceModel / LanguageModel on a TCN body
  (:func:`step_body`): a pure function
  ``(x, state[, age][, cond]) -> (y, new_state[, new_age])``. The state is an explicit tensor
  (N, C_max, slots) holding, for every convolution (and, in non-causal models, every delay
  line), its last ``(k - 1) * d`` inputs in time order; start from zeros
  (:func:`initial_step_state`) and feed each call's ``new_state`` to the next call. Non-causal
  models also carry ``age`` (N,) int64, the frames each stream has seen (zeros at the start);
  their outputs lag by ``stream_delay`` frames exactly as :meth:`TCN.step`'s do.
  Conditioned models (``cond_channels > 0``) take ``cond`` (N, cond_channels) last, in both.

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


def step_body(model: nn.Module) -> TCN:
    """The TCN whose streaming step :class:`StepModule` exports for ``model``.

    ``model`` is a TCN, a :class:`~torchtcn.SequenceModel` with a TCN body and a per-step or
    last-step head, or a :class:`~torchtcn.LanguageModel` with a TCN body: the head (or the
    embedding and decoder) is applied frame by frame around the body's step.

    Raises:
        TypeError: any other model (the message says which part is not exportable).
    """
    from .heads import LanguageModel, SequenceModel  # heads imports the model registry

    body = getattr(model, "body", None) if isinstance(model, (SequenceModel, LanguageModel)) else model
    if not isinstance(body, TCN):
        found = type(model).__name__ if body is model or body is None else (
            f"a {type(model).__name__} with a {type(body).__name__} body")
        raise TypeError(f"the streaming step exports a TCN, or a SequenceModel / LanguageModel "
                        f"with a TCN body; got {found}")
    if isinstance(model, SequenceModel) and model._pools:
        raise TypeError(f"the streaming step of a SequenceModel with head={model.config.head!r} "
                        "(a running mean) is not exportable; per_step and last_step heads are")
    return body


class StepModule(nn.Module):
    """The streaming step of a TCN as a pure function of explicit tensors.

    ``forward(x, state)`` (causal) or ``forward(x, state, age)`` (non-causal), with ``cond``
    appended for a conditioned model: x (N, C_in, t) (or NLC), state (N, C_max, slots),
    age (N,) int64, cond (N, cond_channels) -> y (N, C_out, t), new_state, [new_age].
    Weights are folded once at construction.

    ``model`` may also be a SequenceModel or LanguageModel with a TCN body (see
    :func:`step_body`); ``y`` is then what its ``step`` returns: (N, out_features, t) from a
    per-step or last-step head, or logits (N, vocab_size, t) from tokens x (N, t) int64.

    Example:
        >>> model = TCN(1, [8, 8], kernel_size=3).eval()
        >>> step = StepModule(model)
        >>> y, s = step(torch.randn(2, 1, 1), initial_step_state(model, 2)[0])
        >>> y.shape, s.shape
        (torch.Size([2, 8, 1]), torch.Size([2, 8, 12]))
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        body = step_body(model)
        # Around the body: a LanguageModel's embedding, and the per-frame linear map of a
        # SequenceModel's head or a LanguageModel's decoder (every head here is one Linear).
        wrapped = body is not model
        self.embedding = getattr(model, "embedding", None) if wrapped else None
        self.output = None
        if wrapped:
            self.output = model.head.linear if hasattr(model, "head") else model.decoder
        was_training = model.training
        model.eval()  # the exported step is inference: eval-mode norms, no dropout
        try:
            self.plan = streaming.prepare(body)
        finally:
            model.train(was_training)

    @property
    def x_time_axis(self) -> int:
        """The time axis of ``x``: 1 for tokens (N, t) and NLC inputs, else 2."""
        if self.embedding is not None:
            return 1
        return 2 if self.plan.layout == "NCL" else 1

    @property
    def y_time_axis(self) -> int:
        """The time axis of ``y``: 2 for a head's or decoder's (N, C, t) output, else the body's
        layout's."""
        return 2 if self.output is not None or self.plan.layout == "NCL" else 1

    @property
    def causal(self) -> bool:
        return self.plan.delay == 0

    @property
    def input_names(self) -> list[str]:
        """The inputs ``forward`` takes, in order."""
        return (["x", "state"] + ([] if self.causal else ["age"])
                + (["cond"] if self.plan.cond_channels else []))

    def forward(self, x: torch.Tensor, state: torch.Tensor, *extra: torch.Tensor):
        names = self.input_names
        if len(extra) != len(names) - 2:
            raise TypeError(f"this step takes ({', '.join(names)}), got {2 + len(extra)} inputs")
        age = None if self.causal else extra[0]
        cond = extra[-1] if self.plan.cond_channels else None
        plan = self.plan
        if self.embedding is not None:  # tokens (N, t) -> (N, E, t)
            h = self.embedding(x).transpose(1, 2)
        else:
            h = x if plan.layout == "NCL" else x.transpose(1, 2)
        t = h.shape[2]
        new_lines: dict[int, torch.Tensor] = {}
        masks = {}
        films = None
        if cond is not None:  # each unit's (gamma, beta), both (N, C_out, 1)
            terms = F.linear(cond, *plan.film).unsqueeze(-1)
            films = [part.chunk(2, 1) for part in terms.split(plan.film_rows, 1)]
        if not self.causal:
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

        def unit(conv, inp, j):
            if conv.line.in_delay:
                inp = inp * masks[conv.line.in_delay]
            z = F.conv1d(window(conv.line, inp), conv.weight, conv.bias, dilation=conv.dilation)
            # channel dim -2 of (N, C, t), as streaming's (t, C, N) has it
            return streaming._channel_ops(conv, z, None if films is None else films[j])

        skip_sum = None
        for i, b in enumerate(plan.blocks):
            u = unit(b.conv2, unit(b.conv1, h, 2 * i), 2 * i + 1)
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
        if self.output is not None:  # (N, C, t) -> (N, out, t), frame by frame as in step()
            y = self.output(h.transpose(1, 2)).transpose(1, 2)
        else:
            y = h if plan.layout == "NCL" else h.transpose(1, 2)
        if self.causal:
            return y, new_state
        return y, new_state, age + t


def initial_step_state(model: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Zero state for the exported step: ``(state,)`` for causal models, ``(state, age)``
    otherwise; state (N, C_max, slots) in the model's dtype, age (N,) int64. (A conditioned
    model's step also takes ``cond``, which is the caller's, not state.)"""
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


def _example_cond(model, batch_size: int) -> tuple[torch.Tensor, ...]:
    """``(cond,)`` for a conditioned model (or one with a conditioned body), else ``()``."""
    body = getattr(model, "body", model)
    channels = getattr(getattr(body, "config", None), "cond_channels", 0)
    if not channels:
        return ()
    p = next(model.parameters())
    return (torch.randn(batch_size, channels, dtype=p.dtype, device=p.device),)


class _CondAsInput(nn.Module):
    """``model(x, cond=cond)`` as a function of two positional inputs (ONNX inputs are
    positional; a SequenceModel's second parameter is ``lengths``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model(x, cond=cond)


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
    :class:`~torchtcn.LanguageModel` (input: int64 tokens (N, T)); a conditioned model also
    takes ``"cond"`` (N, cond_channels). The model is exported in eval mode (its mode is
    restored afterwards).
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
        cond = _example_cond(model, 2)
        names = ["x"] + (["cond"] if cond else [])
        axes = {"x": {0: "batch", t_axis: "time"}, "y": y_axes, "cond": {0: "batch"}}
        module = _CondAsInput(model) if cond else model
        return _onnx_export(
            module, (x, *cond), path, names, ["y"], {k: axes[k] for k in names + ["y"]}, opset,
        )
    finally:
        model.train(was_training)


def export_step_onnx(
    model: nn.Module, path, batch_size: int = 1, chunk: int = 1, opset: int = DEFAULT_OPSET
) -> Path:
    """The streaming step as ONNX: inputs ``x``, ``state`` (and ``age``), outputs ``y``,
    ``new_state`` (and ``new_age``); see :class:`StepModule`. Batch is dynamic; the chunk
    length is dynamic for causal models and fixed to ``chunk`` for non-causal ones."""
    step = StepModule(model).eval()
    example = _step_example(model, batch_size, chunk)
    names_in = step.input_names
    names_out = ["y", "new_state"] + ([] if step.causal else ["new_age"])
    axes = {name: {0: "batch"} for name in names_in + names_out}
    if step.causal:
        axes["x"][step.x_time_axis] = axes["y"][step.y_time_axis] = "time"
    return _onnx_export(step, example, path, names_in, names_out, axes, opset)


def _step_example(model: nn.Module, batch_size: int, chunk: int) -> tuple[torch.Tensor, ...]:
    """Example inputs of :class:`StepModule`: x, the zero state (and age), cond if any."""
    return (_example_input(model, batch_size, chunk), *initial_step_state(model, batch_size),
            *_example_cond(model, batch_size))


def export_step_torchscript(model: nn.Module, path, batch_size: int = 1, chunk: int = 1) -> Path:
    """The streaming step as a traced TorchScript module (``torch.jit.load(path)``); same
    signature as :class:`StepModule`. Traced at ``chunk`` frames per call."""
    step = StepModule(model).eval()
    example = _step_example(model, batch_size, chunk)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(step, example, check_trace=False)
        traced.save(str(path))
    log.info("wrote %s", path)
    return path


def export_step_program(model: nn.Module, path, batch_size: int = 2, chunk: int = 1) -> Path:
    """The streaming step as a ``torch.export`` program (``.pt2``; load with
    ``torch.export.load(path).module()``), batch dynamic, ``chunk`` frames per call; same
    signature as :class:`StepModule`."""
    step = StepModule(model).eval()
    example = _step_example(model, batch_size, chunk)
    batch = torch.export.Dim("batch")
    # forward(x, state, *extra): the extra inputs' specs (if any) nest as one tuple
    extra = tuple({0: batch} for _ in example[2:])
    dynamic = ({0: batch}, {0: batch}) + ((extra,) if extra else ())
    program = torch.export.export(step, example, dynamic_shapes=dynamic)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    log.info("wrote %s", path)
    return path
