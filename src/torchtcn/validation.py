"""Input checks shared by every model: clear errors naming what was expected and found."""

from __future__ import annotations

import operator
import os
import sys
import warnings

import torch


def as_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as a Python int ``>= minimum``, for a model's config (which must hold plain
    ints to be saved as JSON).

    Integers of other libraries are accepted (``np.int64(25)``, an integer 0-d tensor, what a
    sweep script or ``np.arange`` hands over); bools and floats (``3.0``) are not.

    Example:
        >>> import numpy as np
        >>> as_int("kernel_size", np.int64(7))
        7
    """
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def check_sequence_input(
    x, channels: int, layout: str, what: str = "input", dtype: torch.dtype | None = None
) -> None:
    """Check ``x`` is a floating (N, C, T) tensor (``layout="NCL"``) or (N, T, C) ("NLC") with
    ``C == channels`` and ``T >= 1``; and, given ``dtype`` (the model's), of that dtype unless
    autocast is on for ``x``'s device (autocast mixes dtypes on purpose).

    Raises:
        TypeError: not a tensor, or not a floating dtype.
        ValueError: wrong number of dimensions, wrong channel count, or an empty time axis.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    shape_name = "(N, C, T)" if layout == "NCL" else "(N, T, C)"
    if x.dim() != 3:
        raise ValueError(
            f"{what} must be 3-D {shape_name} with layout={layout!r}, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}")
    c_dim, t_dim = (1, 2) if layout == "NCL" else (2, 1)
    if x.shape[c_dim] != channels:
        raise ValueError(
            f"{what} must have {channels} channels on dim {c_dim} of {shape_name}, "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[t_dim] < 1:
        raise ValueError(f"{what} must have at least one time step, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{what} dtype must be the model's: expected {dtype}, found {x.dtype} (convert the "
            f"input with x.to({dtype}) or the model with model.to({x.dtype}))"
        )


def check_cond(cond, cond_channels: int, batch: int, like: torch.Tensor, what: str) -> None:
    """Check the global conditioning input of a model built with ``cond_channels``: ``None``
    when that is 0, else a (batch, cond_channels) tensor of ``like``'s dtype and device.

    Raises:
        TypeError: not a tensor, or of another dtype.
        ValueError: missing, unexpected, of the wrong shape or on another device.
    """
    if not cond_channels:
        if cond is not None:
            raise ValueError(
                f"{what} was built without conditioning (cond_channels=0) but cond was given; "
                "build it with cond_channels=C to condition on a (N, C) vector")
        return
    if cond is None:
        raise ValueError(
            f"{what} is conditioned (cond_channels={cond_channels}): pass cond of shape "
            f"(N, {cond_channels}), one vector per sequence")
    if not isinstance(cond, torch.Tensor):
        raise TypeError(f"cond must be a torch.Tensor, got {type(cond).__name__}")
    if cond.shape != (batch, cond_channels):
        raise ValueError(
            f"cond must have shape (N, cond_channels) = ({batch}, {cond_channels}), "
            f"got {tuple(cond.shape)}")
    if cond.dtype != like.dtype:
        raise TypeError(f"cond dtype must be {like.dtype} (the input's), got {cond.dtype}")
    if cond.device != like.device:
        raise ValueError(f"cond must be on {like.device} (the input's), got {cond.device}")


def checked_lengths(lengths, batch: int, steps: int) -> torch.Tensor:
    """``lengths`` of a right-padded batch as a LongTensor, checked: shape (batch,), each in
    1..steps. A list of ints is accepted.

    Raises:
        TypeError: not integers.
        ValueError: wrong shape, or a length outside 1..steps.
    """
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"lengths must be a 1-D integer tensor or a list of ints, got "
                            f"{type(lengths).__name__}") from e
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got "
                         f"{tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must be in 1..{steps} (the padded length), got "
                         f"min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths.long()


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first frame outside torchtcn and torch: the user's
    line that built or called the model, not a line in ``nn.Module.__call__``."""
    internal = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
                os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(internal):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
