"""The synthetic stress tests of Bai et al. (2018): the adding problem and copy memory.

Both generators draw from a caller-supplied ``torch.Generator`` (or an int seed), never
from the global RNG, so the data are reproducible and independent of anything else the
program draws. (The reference code used unseeded ``np.random`` for both.)

Example::

    >>> import torch
    >>> from torchtcn.data import adding_problem, copy_memory
    >>> x, y = adding_problem(4, 600, generator=0)
    >>> x.shape, y.shape
    (torch.Size([4, 2, 600]), torch.Size([4, 1]))
    >>> x, y = copy_memory(4, 1000, generator=torch.Generator().manual_seed(1))
    >>> x.shape, y.shape
    (torch.Size([4, 1, 1020]), torch.Size([4, 1020]))
"""

from __future__ import annotations

import torch

#: Number of classes in copy memory: 0 (blank), 1-8 (digits), 9 (marker).
COPY_N_CLASSES = 10
COPY_BLANK = 0
COPY_MARKER = 9


def _generator(generator: torch.Generator | int) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, found device {generator.device}")
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator or an int seed, found {type(generator).__name__}")


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, found {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, found {value}")
    return value


def adding_problem(
    n: int,
    T: int,
    generator: torch.Generator | int,
    *,
    placement: str = "halves",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem: sum the two marked numbers of a length-``T`` sequence.

    Channel 0 holds ``U(0, 1)`` numbers; channel 1 is a 0/1 mask with exactly two ones.
    The target is the sum of the two marked numbers, so predicting the constant 1
    gives MSE ~0.167 (the baseline a model must beat).

    Placement of the two marks (``placement``):

    * ``"halves"`` (default): one uniformly in ``[0, T//2)``, one in ``[T//2, T)``. This
      is the standard setup since Hochreiter & Schmidhuber (1997) as restated by
      Le et al. (2015) and used in most follow-ups; it guarantees that one mark lies in
      the first half, so the task always needs long memory.
    * ``"anywhere"``: two distinct positions uniform over ``[0, T)``, which is what the
      locuslab reference code does (``np.random.choice(T, 2, replace=False)``).

    Args:
        n: number of sequences.
        T: sequence length (>= 2).
        generator: a CPU ``torch.Generator`` or an int seed.
        placement: ``"halves"`` or ``"anywhere"``.

    Returns:
        ``x`` float32 ``(n, 2, T)`` and ``y`` float32 ``(n, 1)``.

    Example::

        >>> x, y = adding_problem(2, 10, generator=0)
        >>> bool(torch.allclose(y[:, 0], (x[:, 0] * x[:, 1]).sum(-1)))
        True
    """
    n = _positive_int("n", n)
    T = _positive_int("T", T, 2)
    g = _generator(generator)
    values = torch.rand(n, T, generator=g)
    if placement == "halves":
        half = T // 2
        first = torch.randint(0, half, (n,), generator=g)
        second = torch.randint(half, T, (n,), generator=g)
    elif placement == "anywhere":
        first = torch.randint(0, T, (n,), generator=g)
        # Draw from the T-1 other positions and skip over `first`: uniform over distinct pairs.
        second = torch.randint(0, T - 1, (n,), generator=g)
        second = second + (second >= first).long()
    else:
        raise ValueError(f"placement must be 'halves' or 'anywhere', found {placement!r}")
    mask = torch.zeros(n, T)
    rows = torch.arange(n)
    mask[rows, first] = 1.0
    mask[rows, second] = 1.0
    # Sum exactly the two marked values (not a masked reduction over T, which could
    # differ from it in the last bit).
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)
    x = torch.stack([values, mask], dim=1)
    return x, y


def copy_memory(
    n: int,
    T: int,
    copy_len: int = 10,
    *,
    generator: torch.Generator | int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy memory: recall ``copy_len`` digits after ``T`` blank steps.

    Input, length ``T + 2 * copy_len``: ``copy_len`` digits drawn uniformly from 1-8,
    then ``T - 1`` zeros, then ``copy_len + 1`` markers (9). The first marker is the
    cue to start recalling. Target: ``T + copy_len`` zeros, then the same digits. This is
    the layout of the reference code; a model that always outputs 0 scores
    ``10 * log(8) / (T + 20)`` cross entropy per step.

    Args:
        n: number of sequences.
        T: blank length (>= 1); the paper uses 1000 (and 500 .. 2000 in Table 1).
        copy_len: number of digits to remember (reference: 10).
        generator: a CPU ``torch.Generator`` or an int seed (keyword only).

    Returns:
        ``x`` float32 ``(n, 1, T + 2*copy_len)`` with values in 0..9, and ``y`` int64
        ``(n, T + 2*copy_len)``, the class at every step.

    Example::

        >>> x, y = copy_memory(1, 5, copy_len=3, generator=0)
        >>> x[0, 0, :3].long().tolist() == y[0, -3:].tolist()
        True
    """
    n = _positive_int("n", n)
    T = _positive_int("T", T)
    copy_len = _positive_int("copy_len", copy_len)
    g = _generator(generator)
    digits = torch.randint(1, 9, (n, copy_len), generator=g)
    length = T + 2 * copy_len
    x = torch.zeros(n, length, dtype=torch.long)
    x[:, :copy_len] = digits
    x[:, copy_len + T - 1 :] = COPY_MARKER  # copy_len + 1 markers
    y = torch.zeros(n, length, dtype=torch.long)
    y[:, T + copy_len :] = digits
    return x.to(torch.float32).unsqueeze(1), y
