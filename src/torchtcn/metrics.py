"""Benchmark metrics, and the writers that record them while a model trains.

Every task reduces a split to *totals* (sums that add across batches and processes, e.g.
``{"loss": summed loss, "count": scored units, "correct": hits}``) and turns them into its
metric at the end, so a metric over a whole split never depends on how it was batched.

Metric functions take those totals:

========================  ==========================================  ================
name                      value                                       better
========================  ==========================================  ================
``mse``                   loss / count                                lower
``cross_entropy``         loss / count (nats)                         lower
``nll_per_frame``         loss / frames (Bernoulli NLL over 88 keys)  lower
``accuracy``              100 * correct / count                       higher
``bpc``                   loss / count / ln 2                         lower
``perplexity``            exp(loss / count)                           lower
========================  ==========================================  ================

Example:
    >>> compute("perplexity", {"loss": 2 * 4.0, "count": 2})  # doctest: +ELLIPSIS
    54.59...
    >>> higher_is_better("accuracy"), higher_is_better("bpc")
    (True, False)
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_HIGHER = {"accuracy": True, "mse": False, "cross_entropy": False, "nll_per_frame": False,
           "bpc": False, "perplexity": False}


def _mean_loss(totals: dict[str, float]) -> float:
    count = totals.get("count", 0)
    if count <= 0:
        raise ValueError(f"totals must hold a positive 'count', found {totals!r}")
    return totals["loss"] / count


def compute(name: str, totals: dict[str, float]) -> float:
    """The metric ``name`` from summed ``totals`` (``loss``, ``count``, optionally ``correct``).

    Raises:
        ValueError: unknown metric name, or no scored units.
    """
    if name not in _HIGHER:
        raise ValueError(f"unknown metric {name!r}; available: {sorted(_HIGHER)}")
    if name == "accuracy":
        if totals.get("count", 0) <= 0:
            raise ValueError(f"totals must hold a positive 'count', found {totals!r}")
        return 100.0 * totals["correct"] / totals["count"]
    mean = _mean_loss(totals)
    if name == "bpc":
        return mean / math.log(2.0)
    if name == "perplexity":
        # exp of a huge mean loss (a diverged model) is inf, which is the honest answer.
        return math.exp(mean) if mean < 700 else math.inf
    return mean


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better."""
    if name not in _HIGHER:
        raise ValueError(f"unknown metric {name!r}; available: {sorted(_HIGHER)}")
    return _HIGHER[name]


def is_better(new: float, old: float | None, metric: str) -> bool:
    """True when ``new`` improves on ``old`` (``None``: nothing yet) for ``metric``."""
    if old is None:
        return math.isfinite(new)
    return new > old if higher_is_better(metric) else new < old


def add_totals(into: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    """Add ``new``'s sums into ``into`` (in place) and return it."""
    for k, v in new.items():
        into[k] = into.get(k, 0.0) + float(v)
    return into


def strict_json(value):
    """``value`` with every NaN or infinite float (a diverged run, ``--time-limit inf``) as
    None, so that the files written stay standard JSON, which strict parsers can read.

    Example:
        >>> strict_json({"loss": float("nan"), "steps": [1, float("inf")]})
        {'loss': None, 'steps': [1, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


class MetricsWriter:
    """Append one record per evaluation to ``metrics.jsonl`` and ``metrics.csv`` in ``out_dir``,
    and to TensorBoard when ``tensorboard`` is installed (``use_tensorboard=True``).

    Records are flat dicts (``{"epoch": 1, "step": 300, "train_loss": ..., "valid_nll_per_frame":
    ...}``). The CSV header is the union of the keys seen; a record with a new key rewrites the
    file from the JSONL log, so the CSV is always a complete table.

    Example:
        >>> import tempfile
        >>> w = MetricsWriter(tempfile.mkdtemp(), use_tensorboard=False)
        >>> w.write({"epoch": 1, "train_loss": 0.5})
        >>> w.read()[0]["train_loss"]
        0.5
    """

    def __init__(self, out_dir, *, use_tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.out_dir / "metrics.jsonl"
        self.csv = self.out_dir / "metrics.csv"
        self._tb = None
        if use_tensorboard:
            self._open_tensorboard()

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            logger.debug("tensorboard not installed: logging to CSV/JSONL only")
            return
        # purge_step: TensorBoard drops the events logged at or after it by an earlier run
        # (a resumed run logs those steps again).
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge_step)

    def read(self) -> list[dict[str, Any]]:
        """Every record written so far (also those of an earlier, resumed run)."""
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run repeats them)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        self.jsonl.write_text("".join(_json_line(r) for r in kept))
        self._write_csv(kept)
        if self._tb is not None:
            self._tb.close()
            self._open_tensorboard(purge_step=step + 1)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(_json_line(record))
        self._write_csv(self.read())
        if self._tb is not None:
            step = int(record.get("step", 0))
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for r in records:
            keys += [k for k in r if k not in keys]
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(records)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
