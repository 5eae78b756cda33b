"""Export a model, and its streaming step, to ONNX and TorchScript.

Two artefacts for deployment outside Python:

* the **full model** (``export_onnx``, ``export_torchscript``): (N, C_in, T) -> (N, C_out, T),
  N and T dynamic;
* the **streaming step** (``export_step_onnx``, ``export_step_torchscript``,
  ``export_step_program``) of a TCN or an LSTM/GRU/RNN, bare or as the body of a
  SequenceModel / LanguageModel (:func:`step_body`). For a TCN body it is a pure function
  ``(x, state[, age][, cond]) -> (y, new_state[, new_age])``. The state is an explicit tensor
  (N, C_max, slots) holding, for every convolution (and, in non-causal models, every delay
  line), its last ``(k - 1) * d`` inputs in time order; start from zeros
  (:func:`initial_step_state`) and feed each call's ``new_state`` to the next call. Non-causal
  models also carry ``age`` (N,) int64, the frames each stream has seen (zeros at the start),
  and ``end`` (N,) int64, -1 while a stream runs; their outputs lag by ``stream_delay``
  frames exactly as :meth:`TCN.step`'s do. To flush a stream (:meth:`TCN.flush`), set its
  ``end`` to its ``age`` and feed ``stream_delay`` more frames (any values: they are masked
  as the forward pass's zero padding).
  Conditioned models (``cond_channels > 0``) take ``cond`` (N, cond_channels) last, in both.
  For a recurrent body it is ``(x, h[, c]) -> (y, new_h[, new_c])``
  (:class:`RecurrentStepModule`).

The step module uses the same folded weights as :mod:`torchtcn.streaming` but a shift-buffer
formulation (``cat`` + ``conv1d``), which exports to plain ONNX operators.

Example:
    >>> import tempfile, os, torch, torchtcn
    >>> model = torchtcn.TCN(1, [8, 8], kernel_size=3).eval()
    >>> d = tempfile.mkdtemp()
    >>> export_step_onnx(model, os.path.join(d, "step.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import streaming
from .baselines import RecurrentBaseline
from .fused import tracing
from .model import TCN
from .validation import as_int

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block (exports are inference), its mode restored."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"export takes a torchtcn model (TCN, LSTM, GRU, RNN, SequenceModel, "
                        f"LanguageModel), got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _save_trace(module: nn.Module, example: tuple, path) -> Path:
    """Trace ``module`` on ``example`` and save the TorchScript module at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the input checks' shape reads are traced as constants
        torch.jit.trace(module, example, check_trace=False).save(str(path))
    log.debug("wrote %s", path)
    return path


def step_body(model: nn.Module) -> nn.Module:
    """The body (a TCN or an LSTM / GRU / RNN baseline) whose streaming step is exported for
    ``model``.

    ``model`` is such a body, a :class:`~torchtcn.SequenceModel` on one with a per-step or
    last-step head, or a :class:`~torchtcn.LanguageModel` on one: the head (or the embedding
    and decoder) is applied frame by frame around the body's step.

    Raises:
        TypeError: any other model (the message says which part is not exportable).
    """
    from .heads import LanguageModel, SequenceModel  # heads imports the model registry

    body = getattr(model, "body", None) if isinstance(model, (SequenceModel, LanguageModel)) else model
    if not isinstance(body, (TCN, RecurrentBaseline)):
        found = type(model).__name__ if body is model or body is None else (
            f"a {type(model).__name__} with a {type(body).__name__} body")
        raise TypeError(f"the streaming step exports a TCN or an LSTM/GRU/RNN, bare or as the "
                        f"body of a SequenceModel / LanguageModel; got {found}")
    if isinstance(model, SequenceModel) and model._pools:
        raise TypeError(f"the streaming step of a SequenceModel with head={model.config.head!r} "
                        "(a running mean) is not exportable; per_step and last_step heads are")
    return body


def step_module(model: nn.Module) -> nn.Module:
    """The exportable step of ``model``: a :class:`StepModule` for a TCN body, a
    :class:`RecurrentStepModule` for a recurrent one (see :func:`step_body`)."""
    if isinstance(step_body(model), TCN):
        return StepModule(model)
    return RecurrentStepModule(model)


class _FrameIO(nn.Module):
    """What a wrapper adds around its body's step: a LanguageModel's embedding before it, and
    after it the per-frame linear map of a SequenceModel's head (every head is one Linear) or
    a LanguageModel's decoder. Inside, tensors are (N, C, t)."""

    def __init__(self, model: nn.Module, body: nn.Module):
        super().__init__()
        wrapped = body is not model
        self.layout = body.layout
        p = next(model.parameters())
        self.state_dtype, self.state_device = p.dtype, p.device  # of the zero state
        embedding = getattr(model, "embedding", None) if wrapped else None
        output = None
        if wrapped:
            output = model.head.linear if hasattr(model, "head") else model.decoder
        # A snapshot, like the body's folded weights: later training of ``model`` does not
        # reach an exported step. One deepcopy keeps a tied embedding/decoder weight shared.
        self.embedding, self.output = copy.deepcopy((embedding, output))

    @property
    def x_time_axis(self) -> int:
        """The time axis of ``x``: 1 for tokens (N, t) and NLC inputs, else 2."""
        return 1 if self.embedding is not None or self.layout == "NLC" else 2

    @property
    def y_time_axis(self) -> int:
        """The time axis of ``y``: 2 for a head's or decoder's (N, C, t) output, else the body's
        layout's."""
        return 2 if self.output is not None or self.layout == "NCL" else 1

    def _frames_in(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:  # tokens (N, t) -> (N, E, t)
            return self.embedding(x).transpose(1, 2)
        return x if self.layout == "NCL" else x.transpose(1, 2)

    def _frames_out(self, h: torch.Tensor) -> torch.Tensor:
        if self.output is not None:  # (N, C, t) -> (N, out, t), frame by frame as in step()
            return self.output(h.transpose(1, 2)).transpose(1, 2)
        return h if self.layout == "NCL" else h.transpose(1, 2)


class StepModule(_FrameIO):
    """The streaming step of a TCN as a pure function of explicit tensors.

    ``forward(x, state)`` (causal) or ``forward(x, state, age, end)`` (non-causal), with
    ``cond`` appended for a conditioned model: x (N, C_in, t) (or NLC), state (N, C_max,
    slots), age (N,) int64, end (N,) int64, cond (N, cond_channels) -> y (N, C_out, t),
    new_state, [new_age, end]. ``end`` is -1 while a stream runs, else its length: the
    frames from there on are masked to zero at every layer, which is how the last
    ``stream_delay`` outputs are flushed (see the module docstring). Weights are folded once
    at construction.

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
        body = step_body(model)
        if not isinstance(body, TCN):
            raise TypeError(f"StepModule streams a TCN body, got {type(body).__name__}: use "
                            "step_module(model), which picks RecurrentStepModule for it")
        super().__init__(model, body)
        # A private copy of the body, outside the module tree (its weights are not the step's
        # parameters, and exports do not see it): .to() / .double() fold it again.
        object.__setattr__(self, "_snapshot", copy.deepcopy(body).eval())
        self.plan = streaming.prepare(self._snapshot)  # eval-mode norms, no dropout

    def _apply(self, fn, *args, **kwargs):
        """Move or cast the folded weights too (``.to(device)``, ``.double()``): they are plain
        tensors in ``plan``, so fold the moved snapshot again."""
        super()._apply(fn, *args, **kwargs)
        self._snapshot._apply(fn, *args, **kwargs)
        self.plan = streaming.prepare(self._snapshot)
        p = next(self._snapshot.parameters())
        self.state_dtype, self.state_device = p.dtype, p.device
        return self

    @property
    def causal(self) -> bool:
        return self.plan.delay == 0

    @property
    def input_names(self) -> list[str]:
        """The inputs ``forward`` takes, in order."""
        return (["x", "state"] + ([] if self.causal else ["age", "end"])
                + (["cond"] if self.plan.cond_channels else []))

    @property
    def output_names(self) -> list[str]:
        """The outputs ``forward`` returns, in order."""
        return ["y", "new_state"] + ([] if self.causal else ["new_age", "new_end"])

    def zero_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """``(state,)``, or ``(state, age, end)`` when non-causal: see :func:`initial_step_state`."""
        state = torch.zeros(batch_size, self.plan.c_max, self.plan.slots,
                            dtype=self.state_dtype, device=self.state_device)
        if self.causal:
            return (state,)
        age = torch.zeros(batch_size, dtype=torch.long, device=self.state_device)
        return state, age, torch.full_like(age, -1)

    def forward(self, x: torch.Tensor, state: torch.Tensor, *extra: torch.Tensor):
        names = self.input_names
        if len(extra) != len(names) - 2:
            raise TypeError(f"this step takes ({', '.join(names)}), got {2 + len(extra)} inputs")
        if not tracing() and tuple(state.shape[1:]) != (self.plan.c_max, self.plan.slots):
            raise ValueError(f"state must be (N, {self.plan.c_max}, {self.plan.slots}) (from "
                             f"initial_step_state), got shape {tuple(state.shape)}")
        age, end = (None, None) if self.causal else extra[:2]
        cond = extra[-1] if self.plan.cond_channels else None
        plan = self.plan
        h = self._frames_in(x)
        t = h.shape[2]
        new_lines: dict[int, torch.Tensor] = {}
        masks = {}
        films = None
        if cond is not None:  # each unit's (gamma, beta), both (N, C_out, 1)
            terms = F.linear(cond, *plan.film).unsqueeze(-1)
            films = [part.chunk(2, 1) for part in terms.split(plan.film_rows, 1)]
        if not self.causal:  # 0 <= a layer's input time < end (when ended), as streaming._masks
            frames = age[:, None] + torch.arange(t, device=x.device)[None, :]  # (N, t)
            running = (end < 0)[:, None]
            for d in {0, plan.delay, *plan.mask_delays}:
                valid = (frames >= d) & (running | (frames - d < end[:, None]))
                masks[d] = valid.to(h.dtype)[:, None, :]

        def window(line, inp):
            p, c = line.span, inp.shape[1]
            if p == 0:
                return inp
            win = torch.cat([state[:, :c, line.slot : line.slot + p], inp], 2)
            new_lines[line.slot] = F.pad(win[:, :, -p:], (0, 0, 0, plan.c_max - c))
            return win

        def unit(conv, inp, j):
            if masks:  # every layer: after a stream's end its input is zero padding
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
        y = self._frames_out(h)
        if self.causal:
            return y, new_state
        return y, new_state, age + t, end


class RecurrentStepModule(_FrameIO):
    """The streaming step of an LSTM / GRU / RNN baseline (bare, or the body of a SequenceModel
    or LanguageModel) as a pure function of explicit tensors.

    ``forward(x, h)`` (GRU, RNN) or ``forward(x, h, c)`` (LSTM) -> ``(y, new_h[, new_c])``;
    h and c are (N, num_layers, hidden_size), batch first like every other input (the
    transpose of :class:`~torchtcn.RecurrentState`'s). x and y as for :class:`StepModule`.

    Example:
        >>> import torchtcn
        >>> lstm = torchtcn.LSTM(in_channels=2, hidden_size=8).eval()
        >>> step = RecurrentStepModule(lstm)
        >>> y, h, c = step(torch.randn(3, 2, 5), *initial_step_state(lstm, 3))
        >>> y.shape, h.shape
        (torch.Size([3, 8, 5]), torch.Size([3, 1, 8]))
    """

    causal = True

    def __init__(self, model: nn.Module):
        body = step_body(model)
        if not isinstance(body, RecurrentBaseline):
            raise TypeError(f"RecurrentStepModule streams an LSTM/GRU/RNN body, got "
                            f"{type(body).__name__}: use step_module(model)")
        super().__init__(model, body)
        self.rnn = copy.deepcopy(body.rnn)  # a snapshot of the weights, as above
        self.has_cell = body.cell == "lstm"
        self.train(False)

    @property
    def input_names(self) -> list[str]:
        return ["x", "h"] + (["c"] if self.has_cell else [])

    @property
    def output_names(self) -> list[str]:
        return ["y", "new_h"] + (["new_c"] if self.has_cell else [])

    def zero_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """``(h,)``, or ``(h, c)`` for an LSTM: see :func:`initial_step_state`."""
        h = torch.zeros(batch_size, self.rnn.num_layers, self.rnn.hidden_size,
                        dtype=self.state_dtype, device=self.state_device)
        return (h, h.clone()) if self.has_cell else (h,)

    def train(self, mode: bool = True):
        # always inference: no dropout between layers, whatever the caller sets
        return super().train(False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, *extra: torch.Tensor):
        if len(extra) != len(self.input_names) - 2:
            raise TypeError(f"this step takes ({', '.join(self.input_names)}), got "
                            f"{2 + len(extra)} inputs")
        seq = self._frames_in(x).transpose(1, 2)  # (N, t, C), as the batch-first RNN takes it
        hidden = h.transpose(0, 1).contiguous()
        if self.has_cell:
            y, (h_new, c_new) = self.rnn(seq, (hidden, extra[0].transpose(0, 1).contiguous()))
            return self._frames_out(y.transpose(1, 2)), h_new.transpose(0, 1), c_new.transpose(0, 1)
        y, h_new = self.rnn(seq, hidden)
        return self._frames_out(y.transpose(1, 2)), h_new.transpose(0, 1)


def initial_step_state(model: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Zero state for the exported step, in the model's dtype and device.

    TCN body: ``(state,)`` for causal models, ``(state, age, end)`` otherwise; state
    (N, C_max, slots), age (N,) int64 zeros, end (N,) int64 -1 (the stream runs). (A
    conditioned model's step also takes ``cond``, which is the caller's, not state.) Recurrent body: ``(h,)`` or, for an LSTM, ``(h, c)``,
    each (N, num_layers, hidden_size)."""
    return step_module(model).zero_state(batch_size)


def _example_input(model, batch_size: int, length: int) -> torch.Tensor:
    body = getattr(model, "body", model)
    if not isinstance(model, nn.Module) or not hasattr(body, "in_channels"):
        raise TypeError(f"export takes a torchtcn model (TCN, LSTM, GRU, RNN, SequenceModel, "
                        f"LanguageModel), got {type(model).__name__}")
    p = next(model.parameters())
    if hasattr(model, "embedding"):  # language model: tokens
        return torch.zeros(batch_size, length, dtype=torch.long, device=p.device)
    shape = (batch_size, body.in_channels, length)
    if body.layout == "NLC":
        shape = (batch_size, length, body.in_channels)
    return torch.randn(shape, dtype=p.dtype, device=p.device, generator=_example_rng(p.device))


def _example_rng(device) -> torch.Generator:
    """A private generator for example inputs: an export must not move the caller's seeded RNG."""
    return torch.Generator(device=device).manual_seed(0)


def _example_cond(model, batch_size: int) -> tuple[torch.Tensor, ...]:
    """``(cond,)`` for a conditioned model (or one with a conditioned body), else ``()``."""
    body = getattr(model, "body", model)
    channels = getattr(getattr(body, "config", None), "cond_channels", 0)
    if not channels:
        return ()
    p = next(model.parameters())
    return (torch.randn(batch_size, channels, dtype=p.dtype, device=p.device,
                        generator=_example_rng(p.device)),)


class _CondAsInput(nn.Module):
    """``model(x, cond=cond)`` as a function of two positional inputs (ONNX inputs are
    positional; a SequenceModel's second parameter is ``lengths``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model(x, cond=cond)


def _opset_range() -> tuple[int, int]:
    """The ONNX opsets this torch's exporter writes."""
    try:
        from torch.onnx import _constants
    except ImportError:  # private module: fall back to what torch 2.x supports
        return 7, 20
    return _constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET


def require_onnx() -> None:
    """Raise an ImportError naming the extra to install when ``onnx`` is missing (torch's ONNX
    exporter needs it to write the file)."""
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs the onnx package: pip install 'torchtcn[export]' "
                          "(or pip install onnx)") from e


def _onnx_export(module, args, path, input_names, output_names, dynamic_axes, opset) -> Path:
    require_onnx()
    low, high = _opset_range()
    if as_int("opset", opset) < low or opset > high:
        raise ValueError(f"opset must be in {low}..{high} (what this torch exports), got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy (TorchScript-based) exporter is deprecated in favour of dynamo=True, but it
        # handles these small graphs reliably and needs only onnx (not onnxscript).
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
    log.debug("wrote %s", path)
    return path


def export_onnx(model: nn.Module, path, opset: int = DEFAULT_OPSET) -> Path:
    """The full model as ONNX: input ``"x"`` -> output ``"y"``, batch and time dynamic.

    Works for a TCN, a :class:`~torchtcn.SequenceModel` and a
    :class:`~torchtcn.LanguageModel` (input: int64 tokens (N, T)); a conditioned model also
    takes ``"cond"`` (N, cond_channels). The model is exported in eval mode (its mode is
    restored afterwards). The graph keeps the model's dtype; onnxruntime's CPU provider has no
    float64 Conv/LSTM/GRU/RNN kernels, so export a float32 copy (``model.float()``) for it.
    """
    with _eval_mode(model):
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


def export_torchscript(model: nn.Module, path) -> Path:
    """The full model as a traced TorchScript module (``torch.jit.load(path)``), in eval mode:
    ``y = module(x)`` (or ``module(x, cond)`` for a conditioned model), any batch and length.

    Traced rather than scripted: the graph of a TCN, its heads and the recurrent baselines
    does not depend on the input's shape, so one trace serves every (N, T); the eager
    model's input checks (Python) are not part of it. The model's mode is restored.

    Example:
        >>> model = TCN(1, [8, 8], kernel_size=3)
        >>> export_torchscript(model, "model.pt")  # doctest: +SKIP
        >>> torch.jit.load("model.pt")(torch.randn(4, 1, 100)).shape  # doctest: +SKIP
        torch.Size([4, 8, 100])
    """
    with _eval_mode(model):
        cond = _example_cond(model, 2)
        module = _CondAsInput(model) if cond else model
        return _save_trace(module, (_example_input(model, 2, 16), *cond), path)


def export_step_onnx(
    model: nn.Module, path, batch_size: int = 1, chunk: int = 1, opset: int = DEFAULT_OPSET
) -> Path:
    """The streaming step as ONNX: inputs ``x``, ``state`` (and ``age``, ``end``), outputs
    ``y``, ``new_state`` (and ``new_age``, ``new_end``), or for a recurrent body ``x``, ``h``
    (, ``c``) -> ``y``, ``new_h`` (, ``new_c``); see :func:`step_module`. Batch is dynamic; the chunk
    length is dynamic for causal models and fixed to ``chunk`` for non-causal ones."""
    step = step_module(model).eval()
    example = _step_example(step, model, batch_size, chunk)
    names_in = step.input_names
    names_out = step.output_names
    axes = {name: {0: "batch"} for name in names_in + names_out}
    if step.causal:
        axes["x"][step.x_time_axis] = axes["y"][step.y_time_axis] = "time"
    return _onnx_export(step, example, path, names_in, names_out, axes, opset)


def _step_example(step: nn.Module, model: nn.Module, batch_size: int,
                  chunk: int) -> tuple[torch.Tensor, ...]:
    """Example inputs of ``step`` (built from ``model``): x, the zero state, cond if any."""
    batch_size, chunk = as_int("batch_size", batch_size), as_int("chunk", chunk)
    return (_example_input(model, batch_size, chunk), *step.zero_state(batch_size),
            *_example_cond(model, batch_size))


def export_step_torchscript(model: nn.Module, path, batch_size: int = 1, chunk: int = 1) -> Path:
    """The streaming step as a traced TorchScript module (``torch.jit.load(path)``); same
    signature as :func:`step_module`'s. Traced at ``chunk`` frames per call."""
    step = step_module(model).eval()
    return _save_trace(step, _step_example(step, model, batch_size, chunk), path)


def export_step_program(model: nn.Module, path, batch_size: int = 2, chunk: int = 1) -> Path:
    """The streaming step as a ``torch.export`` program (``.pt2``; load with
    ``torch.export.load(path).module()``), batch dynamic, ``chunk`` frames per call; same
    signature as :func:`step_module`'s. The program takes any batch size, 1 included; the
    example it is traced with has at least 2 streams (torch.export turns a dimension of size
    0 or 1 into a constant)."""
    step = step_module(model).eval()
    example = _step_example(step, model, max(as_int("batch_size", batch_size), 2), chunk)
    batch = torch.export.Dim("batch")
    # forward(x, state, *extra): the extra inputs' specs (if any) nest as one tuple
    extra = tuple({0: batch} for _ in example[2:])
    dynamic = ({0: batch}, {0: batch}) + ((extra,) if extra else ())
    with warnings.catch_warnings():
        # nn.LSTM/GRU/RNN re-point their flat weight list while traced; harmless here
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights")
        program = torch.export.export(step, example, dynamic_shapes=dynamic)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    log.debug("wrote %s", path)
    return path
