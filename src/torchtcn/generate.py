"""Autoregressive generation with the streaming state: constant cost per new sample.

The prompt is consumed in one chunk, then every new sample is one single-frame ``step``: the
network never re-reads its history (the state holds it), so generating ``steps`` samples costs
``steps`` single-frame steps however long the context grows.

Example:
    >>> import torch, torchtcn
    >>> lm = torchtcn.LanguageModel(torchtcn.TCN(16, [16, 16], kernel_size=3), 50).eval()
    >>> out = torchtcn.generate(lm, torch.tensor([[1, 2, 3]]), steps=5)
    >>> out.shape
    torch.Size([1, 8])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .heads import LanguageModel
from .validation import as_int

SAMPLERS = ("greedy", "multinomial")


def _check_causal(model) -> None:
    delay = getattr(model, "stream_delay", 0)
    if delay:
        raise ValueError(
            f"generation feeds each output back as the next input, so it needs a causal model "
            f"(stream_delay 0), got stream_delay={delay}"
        )


def _pick_token(logits, sample, temperature: float, generator) -> torch.Tensor:
    """(N, vocab) logits -> (N,) next tokens."""
    if callable(sample):
        token = sample(logits)
        n = logits.shape[0]
        if not (isinstance(token, torch.Tensor) and token.shape == (n,)
                and not token.is_floating_point() and not token.is_complex()
                and token.dtype != torch.bool):
            found = (f"{token.dtype} of shape {tuple(token.shape)}"
                     if isinstance(token, torch.Tensor) else type(token).__name__)
            raise ValueError(f"a sampler callable must map (N, vocab) logits to (N,) = ({n},) "
                             f"integer tokens, found {found}")
        vocab = logits.shape[1]
        if token.numel() and (int(token.min()) < 0 or int(token.max()) >= vocab):
            # (checked here, not by the next step's embedding: the last token is never fed)
            raise ValueError(f"a sampler callable must return tokens in [0, {vocab}) "
                             f"(vocab_size), found min {int(token.min())}, max {int(token.max())}")
        return token
    if sample == "greedy":
        return logits.argmax(dim=1)
    # float64: a small temperature would overflow float32 logits / temperature to inf
    scaled = logits.double() / temperature
    if not torch.isfinite(scaled).all():
        raise ValueError(f"temperature={temperature!r} is too small: logits / temperature "
                         "overflow; use sample='greedy' (the limit of temperature -> 0)")
    probs = torch.softmax(scaled, dim=1)
    if generator is not None and generator.device != probs.device:
        # a CPU torch.Generator() with a CUDA model: sample where the generator lives
        return torch.multinomial(probs.to(generator.device), 1,
                                 generator=generator)[:, 0].to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model,
    prompt: torch.Tensor,
    steps: int,
    sample: str | Callable = "greedy",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Extend ``prompt`` by ``steps`` samples, feeding each output back as the next input.

    Args:
        model: a causal model with ``init_state``/``step`` in eval mode: a
            :class:`~torchtcn.LanguageModel` (tokens), or a regressor whose output at a frame
            predicts the next input frame (a :class:`~torchtcn.TCN`, or a
            :class:`~torchtcn.SequenceModel` with a per-step head, with as many outputs as
            inputs).
        prompt: tokens (N, T0) for a language model; frames (N, C, T0) (or (N, T0, C) for
            ``layout="NLC"``) for a regressor. T0 >= 1.
        steps: number of new samples (>= 0).
        sample: language models: ``"greedy"`` (argmax), ``"multinomial"`` (softmax of
            ``logits / temperature``), or a callable (N, vocab) logits -> (N,) tokens.
            Regressors: ``"greedy"`` feeds the output back unchanged; a callable maps the
            (N, C) output to the (N, C) next input (e.g. to add noise).
        temperature: > 0, for ``"multinomial"``.
        generator: the ``torch.Generator`` multinomial sampling draws from (reproducible runs).
        cond: (N, cond_channels) conditioning vectors of a conditioned regressor (a TCN, or a
            SequenceModel with a TCN body, built with ``cond_channels > 0``).

    Returns:
        The prompt followed by the samples: (N, T0 + steps) tokens, or (N, C, T0 + steps)
        frames (NLC: (N, T0 + steps, C)).

    Example:
        >>> import torch, torchtcn
        >>> lm = torchtcn.LanguageModel(torchtcn.TCN(16, [16, 16]), vocab_size=50).eval()
        >>> prompt = torch.tensor([[3, 1, 4], [1, 5, 9]])              # (N, T0) tokens
        >>> gen = torch.Generator().manual_seed(0)
        >>> generate(lm, prompt, steps=5, sample="multinomial", generator=gen).shape
        torch.Size([2, 8])
    """
    steps = as_int("steps", steps, minimum=0)
    if not (callable(sample) or sample in SAMPLERS):
        raise ValueError(f"sample must be one of {list(SAMPLERS)} or a callable, got {sample!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not 0 < temperature < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "init_state")
            and hasattr(model, "step")):
        raise TypeError(f"generate needs a torchtcn model that streams (init_state / step), "
                        f"got {type(model).__name__}")
    if not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a torch.Tensor, got {type(prompt).__name__}")
    _check_causal(model)
    if isinstance(model, LanguageModel):
        if cond is not None:
            raise ValueError("cond was given, but a LanguageModel takes no conditioning")
        return _generate_tokens(model, prompt, steps, sample, temperature, generator)
    if sample == "multinomial":
        raise ValueError("sample='multinomial' needs a language model; regressors take "
                         "'greedy' or a callable")
    body_config = getattr(getattr(model, "body", model), "config", None)
    if cond is not None and not getattr(body_config, "cond_channels", 0):
        raise ValueError(f"cond was given, but this {type(model).__name__} is not conditioned "
                         "(a TCN built with cond_channels > 0 takes it)")
    return _generate_frames(model, prompt, steps, sample, {} if cond is None else {"cond": cond})


def _generate_tokens(model, prompt, steps, sample, temperature, generator) -> torch.Tensor:
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"a language model's prompt must be (N, T0) tokens with T0 >= 1, "
                         f"got shape {tuple(prompt.shape)}")
    n, t0 = prompt.shape
    out = torch.empty(n, t0 + steps, dtype=torch.long, device=prompt.device)
    out[:, :t0] = prompt
    state = model.init_state(n)
    logits, state = model.step(prompt, state)
    for i in range(steps):
        token = _pick_token(logits[:, :, -1], sample, temperature, generator)
        out[:, t0 + i] = token
        if i + 1 < steps:
            logits, state = model.step(out[:, t0 + i : t0 + i + 1], state)
    return out


def _generate_frames(model, prompt, steps, sample, cond_kwargs: dict) -> torch.Tensor:
    layout = getattr(getattr(model, "body", model), "layout", "NCL")
    in_channels = getattr(model, "in_channels", None) or model.body.in_channels
    if prompt.dim() != 3:
        raise ValueError(f"a regressor's prompt must be 3-D frames, got shape {tuple(prompt.shape)}")
    x = prompt if layout == "NCL" else prompt.transpose(1, 2)  # (N, C, T0)
    n, c, t0 = x.shape
    out = x.new_empty(n, c, t0 + steps)
    out[:, :, :t0] = x
    # A bare TCN answers in its own layout; heads always answer (N, out_features, t).
    outputs_nlc = layout == "NLC" and not hasattr(model, "head")
    state = model.init_state(n)
    y, state = model.step(prompt, state, **cond_kwargs)
    for i in range(steps):
        y_last = y[:, -1, :] if outputs_nlc else y[:, :, -1]
        nxt = sample(y_last) if callable(sample) else y_last
        if not isinstance(nxt, torch.Tensor):
            raise TypeError(f"a sampler callable must map the (N, C) output to an (N, C) "
                            f"tensor, found {type(nxt).__name__}")
        if nxt.shape != (n, in_channels):
            raise ValueError(
                f"generating frames feeds each output back as input, so it needs outputs of "
                f"shape (N, in_channels) = {(n, in_channels)} per frame, found {tuple(nxt.shape)}"
            )
        out[:, :, t0 + i] = nxt
        if i + 1 < steps:
            frame = out[:, :, t0 + i : t0 + i + 1]
            frame = frame if layout == "NCL" else frame.transpose(1, 2)
            y, state = model.step(frame, state, **cond_kwargs)
    return out if layout == "NCL" else out.transpose(1, 2)
