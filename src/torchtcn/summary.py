"""A per-block table of a model: widths, dilation, receptive field so far, parameters.

Example:
    >>> import torchtcn
    >>> print(torchtcn.summary(torchtcn.TCN(1, [25] * 2, kernel_size=7)))  # doctest: +ELLIPSIS
    TCN: in_channels=1, kernel_size=7, causal, norm=weight
    ...
"""

from __future__ import annotations

from torch import nn

from . import receptive_field as rf


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of distinct parameters (tied weights counted once): the trainable ones, or
    every one with ``trainable_only=False``.

    Example:
        >>> import torchtcn
        >>> count_parameters(torchtcn.TCN(1, [25] * 8, kernel_size=7))  # seq-MNIST body
        66650
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    seen, total = set(), 0
    for p in module.parameters():
        if (p.requires_grad or not trainable_only) and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return lines


def _tcn_lines(model) -> list[str]:
    cfg = model.config
    rfs = rf.receptive_fields_per_block(cfg.kernel_size, model.dilations)
    widths = (cfg.in_channels,) + cfg.channels
    rows = []
    for i, block in enumerate(model.blocks):
        rows.append(
            [
                str(i),
                f"{widths[i]}->{widths[i + 1]}",
                str(model.dilations[i]),
                str(rfs[i]),
                "1x1" if block.downsample is not None else "-",
                f"{count_parameters(block, trainable_only=False):,}",
            ]
        )
    head = (
        f"TCN: in_channels={cfg.in_channels}, kernel_size={cfg.kernel_size}, "
        f"{'causal' if cfg.causal else f'non-causal (lookahead {model.lookahead})'}, "
        f"norm={cfg.norm}"
        + (f", gate={cfg.gate}" if cfg.gate else "")
        + (", skip connections" if cfg.skip_connections else "")
        + (f", conditioned (FiLM, cond_channels={cfg.cond_channels})" if cfg.cond_channels else "")
    )
    lines = [head, *_table(["block", "channels", "dilation", "RF", "residual", "params"], rows)]
    if model.skips is not None:
        skips = count_parameters(model.skips, trainable_only=False)
        lines.append(f"skip projections: {skips:,} params")
    holes = model.blind_spots
    if holes:
        lines.append(f"blind spots: {len(holes)} lags never seen ({rf.describe_lags(holes)})")
    return lines


def summary(model: nn.Module) -> str:
    """A human-readable table of ``model`` (per block for a TCN) and its totals.

    Example:
        >>> import torchtcn
        >>> print(summary(torchtcn.TCN(1, [8, 8], kernel_size=3)))
        TCN: in_channels=1, kernel_size=3, causal, norm=weight
        block  channels  dilation  RF  residual  params
        -----  --------  --------  --  --------  ------
            0      1->8         1   5       1x1     264
            1      8->8         2  13         -     416
        total parameters: 680
        receptive field: 13 steps
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    body = getattr(model, "body", model)
    lines = _tcn_lines(body) if hasattr(body, "blocks") else [repr(body)]
    if body is not model:
        lines.insert(0, f"{type(model).__name__} around:")
        # every parameter, frozen or not: the total line says how many are trainable
        rest = (count_parameters(model, trainable_only=False)
                - count_parameters(body, trainable_only=False))
        kind = getattr(getattr(model, "config", None), "head", None)
        what = f"head ({kind})" if isinstance(kind, str) else "head / embedding"
        lines.append(f"{what}: {rest:,} params")
    field = getattr(model, "receptive_field", None)
    total, trainable = count_parameters(model, trainable_only=False), count_parameters(model)
    frozen = "" if trainable == total else f" ({trainable:,} trainable)"
    lines.append(f"total parameters: {total:,}{frozen}")
    lines.append(f"receptive field: {'unbounded' if field is None else f'{field:,} steps'}")
    return "\n".join(lines)
