"""Multivariate time series from a CSV file, split in time and normalised.

The file has a header row and one row per time step, oldest first. Every column whose values
all parse as numbers is a feature; other columns (dates, labels) are left out and named in
the log. A missing or non-numeric value in a numeric column is an error naming its row and
column: nothing is filled in silently.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "load.csv")
    >>> _ = open(path, "w").write("date,load,temp\\n" + "".join(
    ...     f"2026-01-{i % 28 + 1:02d},{i % 7},{i % 5}\\n" for i in range(100)))
    >>> series = load_series_csv(path, target=["load"])
    >>> series.columns, series.target, tuple(series.values.shape)
    (['load', 'temp'], ['load'], (100, 2))
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass
class SeriesData:
    """``values`` (T, C) float64, oldest first; ``columns`` their names; ``target`` the names of
    the columns to forecast (a subset of ``columns``)."""

    values: torch.Tensor
    columns: list[str]
    target: list[str]

    @property
    def target_index(self) -> list[int]:
        return [self.columns.index(name) for name in self.target]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def load_series_csv(path, target: list[str] | None = None) -> SeriesData:
    """Read a CSV time series (header row, one row per step) into a :class:`SeriesData`.

    Args:
        path: the CSV file.
        target: names of the columns to forecast; None: every numeric column.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: no header or fewer than 2 rows, a column without a name, rows of the
            wrong width, a numeric column with a missing or non-finite value (named by row
            and column), no numeric column, or a target that is not a numeric column (the
            message lists those).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()  # trailing blank lines; an empty row inside the file is a missing step
    if len(rows) < 3:
        found = "an empty file" if not rows else f"a header and {len(rows) - 1} row(s) of values"
        raise ValueError(f"{path}: expected a header row and at least 2 rows of values, "
                         f"found {found}")
    header = [name.strip() for name in rows[0]]
    unnamed = [j + 1 for j, name in enumerate(header) if not name]
    if unnamed:  # pandas' df.to_csv() writes its index so: it would become a feature and target
        raise ValueError(f"{path}: column(s) {unnamed} have no name in the header {rows[0]}; "
                         "name them, or drop them (a pandas index: write with index=False)")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: column names must be unique, found {header}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} fields, the header {len(header)}")
    numeric, skipped = [], []
    for j, name in enumerate(header):
        parsed = [_number(row[j].strip()) for row in rows[1:]]
        bad = [i for i, v in enumerate(parsed, start=2) if v is None]
        if not bad:
            numeric.append((name, parsed))
        elif len(bad) == len(parsed):
            skipped.append(name)
        else:
            raise ValueError(
                f"{path}: column {name!r} is numeric but row {bad[0]} holds "
                f"{rows[bad[0] - 1][j]!r}; fill or drop missing values before training "
                f"({len(bad)} bad rows)")
    if not numeric:
        raise ValueError(f"{path}: no numeric column (found {header})")
    if skipped:
        log.info("%s: left out non-numeric columns %s", path, skipped)
    columns = [name for name, _ in numeric]
    target = columns if target is None else list(target)
    repeated = sorted({name for name in target if target.count(name) > 1})
    if repeated:  # two head outputs for one column, and two forecast columns of one name
        raise ValueError(f"{path}: target columns must be distinct, found {repeated} more than once")
    missing = [name for name in target if name not in columns]
    if missing or not target:
        raise ValueError(f"{path}: target columns {missing or target} are not numeric columns of "
                         f"the file; numeric columns: {columns}")
    # float64: normalising in float32 would lose a small variation on a large offset (1e9 +
    # sin t) and overflow beyond 3.4e38; the normalised windows are cast afterwards
    values = torch.tensor([col for _, col in numeric], dtype=torch.float64).T.contiguous()
    return SeriesData(values, columns, target)


def chronological_split(length: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(valid_start, test_start)``: train is ``[0, valid_start)``, valid up to
    ``test_start``, test the rest; each split gets at least one step.

    Example:
        >>> chronological_split(100, 0.1, 0.2)
        (70, 80)
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(f"valid_fraction + test_fraction must leave data to train on, got "
                         f"{valid_fraction} + {test_fraction}")
    test_start = length - max(1, round(length * test_fraction))
    valid_start = test_start - max(1, round(length * valid_fraction))
    if valid_start < 1:
        raise ValueError(f"a series of {length} steps is too short to split into train, valid "
                         f"and test ({valid_fraction}, {test_fraction})")
    return valid_start, test_start
