"""Receptive-field and padding arithmetic, as small pure integer functions.

Every number the rest of the package reports about history, padding or streaming delay comes
from here, so there is exactly one definition of each (in the spirit of timm's
``layers/padding.py``).

A TCN block holds ``convs_per_block`` (2) dilated convolutions of kernel size ``k``. A
convolution with dilation ``d`` looks ``(k - 1) * d`` steps back (causal) or splits that span
between past and future (non-causal), so a stack with dilations ``d_i`` sees

    RF = 1 + convs_per_block * (k - 1) * sum(d_i)

consecutive input steps.

Example:
    >>> receptive_field(7, default_dilations(8))   # the paper's seq-MNIST model
    3061
    >>> blocks_for_history(3000, kernel_size=7)
    8

Not every step inside that span need be seen: a dilation that outgrows the span of the blocks
below it leaves holes ("blind spots", :func:`blind_spots`).
"""

from __future__ import annotations

from collections.abc import Sequence

CONVS_PER_BLOCK = 2


class ReceptiveFieldWarning(UserWarning):
    """The receptive field does not cover what the model is asked to see: a last-step head
    read sequences longer than it, or the dilations leave blind spots inside it. Silence with
    ``warnings.filterwarnings("ignore", category=torchtcn.ReceptiveFieldWarning)``."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_stack(kernel_size: object, dilations: object, convs_per_block: object) -> None:
    """Reject what would give a meaningless number (a kernel of 0, a dilation of 0, ...)."""
    _check_positive_int("kernel_size", kernel_size)
    _check_positive_int("convs_per_block", convs_per_block)
    if isinstance(dilations, (str, bytes)) or not isinstance(dilations, Sequence):
        raise TypeError(f"dilations must be a sequence of ints, got {type(dilations).__name__}")
    for i, d in enumerate(dilations):
        _check_positive_int(f"dilations[{i}]", d)


def default_dilations(num_blocks: int, base: int = 2) -> list[int]:
    """Dilations ``base**i`` for ``i = 0 .. num_blocks - 1``."""
    _check_positive_int("num_blocks", num_blocks)
    _check_positive_int("base", base)
    return [base**i for i in range(num_blocks)]


def conv_padding(kernel_size: int, dilation: int, causal: bool) -> tuple[int, int]:
    """Left and right zero padding that keeps a dilated convolution's output length.

    Causal: all ``(k - 1) * d`` on the left. Non-causal: split as evenly as possible, the odd
    step going to the past, so no convolution looks further ahead than it looks back.
    """
    _check_positive_int("kernel_size", kernel_size)
    _check_positive_int("dilation", dilation)
    span = (kernel_size - 1) * dilation
    if causal:
        return span, 0
    right = span // 2
    return span - right, right


def receptive_field(
    kernel_size: int, dilations: Sequence[int], convs_per_block: int = CONVS_PER_BLOCK
) -> int:
    """Number of consecutive input steps one output step depends on.

    Raises:
        TypeError, ValueError: for a kernel size, dilation or ``convs_per_block`` below 1.
    """
    _check_stack(kernel_size, dilations, convs_per_block)
    return 1 + convs_per_block * (kernel_size - 1) * sum(dilations)


def receptive_fields_per_block(
    kernel_size: int, dilations: Sequence[int], convs_per_block: int = CONVS_PER_BLOCK
) -> list[int]:
    """Receptive field after each block (cumulative)."""
    _check_stack(kernel_size, dilations, convs_per_block)
    out, total = [], 0
    for d in dilations:
        total += d
        out.append(1 + convs_per_block * (kernel_size - 1) * total)
    return out


def lookahead(
    kernel_size: int,
    dilations: Sequence[int],
    causal: bool,
    convs_per_block: int = CONVS_PER_BLOCK,
) -> int:
    """How many future steps one output step sees (0 when causal).

    This is also the delay, in frames, with which a non-causal model can be streamed exactly.
    It is at most ``(receptive_field - 1) // 2``.
    """
    _check_stack(kernel_size, dilations, convs_per_block)
    return convs_per_block * sum(conv_padding(kernel_size, d, causal)[1] for d in dilations)


def history(
    kernel_size: int,
    dilations: Sequence[int],
    causal: bool,
    convs_per_block: int = CONVS_PER_BLOCK,
) -> int:
    """How many past steps one output step sees (``receptive_field - 1 - lookahead``)."""
    rf = receptive_field(kernel_size, dilations, convs_per_block)
    return rf - 1 - lookahead(kernel_size, dilations, causal, convs_per_block)


def blocks_for_history(
    target: int,
    kernel_size: int,
    base: int = 2,
    convs_per_block: int = CONVS_PER_BLOCK,
) -> int:
    """Fewest blocks with dilations ``base**i`` whose receptive field covers ``target`` steps.

    ``target`` is the number of input steps the last output must see (for a last-step
    classifier over sequences of length T, pass T).

    Raises:
        ValueError: if ``kernel_size == 1`` and ``target > 1`` (a 1-wide kernel never widens
            the receptive field), or ``base == 1`` and the target is out of reach in 10**6 blocks.
    """
    _check_positive_int("target", target)
    _check_positive_int("kernel_size", kernel_size)
    _check_positive_int("base", base)
    _check_positive_int("convs_per_block", convs_per_block)
    if target == 1:
        return 1
    if kernel_size == 1:
        raise ValueError(
            f"kernel_size=1 never widens the receptive field; cannot reach target={target}"
        )
    blocks, total = 0, 0
    per_unit = convs_per_block * (kernel_size - 1)
    while 1 + per_unit * total < target:
        total += base**blocks
        blocks += 1
        if blocks > 10**6:
            raise ValueError(f"target={target} is out of reach with base={base}")
    return blocks


def plan_dilations(
    target: int, kernel_size: int, base: int = 2, convs_per_block: int = CONVS_PER_BLOCK
) -> list[int]:
    """Dilations of the shortest ``base**i`` stack that covers ``target`` steps.

    Example (a last-step classifier over 784 steps, kernel 7):
        >>> plan_dilations(784, kernel_size=7)
        [1, 2, 4, 8, 16, 32, 64]
        >>> receptive_field(7, plan_dilations(784, kernel_size=7))
        1525
    """
    return default_dilations(blocks_for_history(target, kernel_size, base, convs_per_block), base)


def blind_spots(
    kernel_size: int,
    dilations: Sequence[int],
    causal: bool = True,
    convs_per_block: int = CONVS_PER_BLOCK,
) -> list[int]:
    """Lags inside the receptive field that no output step depends on.

    A lag counts back from the output step: output t never sees input ``t - lag`` (negative
    lags are future steps of a non-causal model). Holes appear when a dilation outgrows the
    span the blocks below it cover, e.g. kernel 2 with dilations [1, 4]; the default ``2**i``
    dilations never leave any.

    Example:
        >>> blind_spots(2, [1, 4])
        [3, 7]
        >>> blind_spots(3, default_dilations(6))
        []
    """
    _check_stack(kernel_size, dilations, convs_per_block)
    # The reachable lags are a Minkowski sum, which does not depend on the convolutions'
    # order: taken by growing dilation, they stay one unbroken run 0..reach exactly when no
    # dilation jumps past reach + 1. That answers the usual stacks at once, however large
    # their receptive field (a bitset of 2**60 bits would not fit).
    reach = 0
    for d in sorted(dilations):
        if d > reach + 1:
            break
        reach += convs_per_block * (kernel_size - 1) * d
    else:
        return []
    # Bit l of ``seen`` is set when some path reaches causal lag l: each convolution adds one
    # of its taps' lags (a Minkowski sum, done as shifts of a Python int used as a bitset).
    # A block's residual path adds real lag 0, which is causal lag "the block's lookahead":
    # a tap when causal, but not when an odd (k - 1) * d splits its padding unevenly.
    seen = 1
    for d in dilations:
        before = seen
        for _ in range(convs_per_block):
            reached = 0
            for m in range(kernel_size):
                reached |= seen << (m * d)
            seen = reached
        seen |= before << (convs_per_block * conv_padding(kernel_size, d, causal)[1])
    rf = receptive_field(kernel_size, dilations, convs_per_block)
    if seen == (1 << rf) - 1:
        return []
    shift = lookahead(kernel_size, dilations, causal, convs_per_block)
    return [lag - shift for lag in range(rf) if not (seen >> lag) & 1]


def describe_lags(lags: Sequence[int], limit: int = 6) -> str:
    """``[3, 4, 5, 9]`` -> ``"3..5, 9"`` (at most ``limit`` runs, then ``...``)."""
    runs: list[list[int]] = []
    for lag in lags:
        if runs and lag == runs[-1][1] + 1:
            runs[-1][1] = lag
        else:
            runs.append([lag, lag])
    text = [f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")
