"""Shared pieces of the training benchmarks: the contenders, one training step, interleaved
timing, and the markdown / JSON output.

The paper's sequential-MNIST setting (Bai et al. 2018, section 5): 1 input channel, 10
classes, batch 64, 784 steps, Adam, the prediction read from the last step. Every contender
is a body (N, 1, T) -> (N, C, T) plus the same :class:`~torchtcn.heads.LastStepHead`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import LastStepHead
from ..summary import count_parameters

log = logging.getLogger(__name__)

IN_CHANNELS = 1
CLASSES = 10
TCN_WIDTHS = [25] * 8
TCN_KERNEL = 7
TCN_DROPOUT = 0.05
LSTM_HIDDEN = 130  # 70,470 parameters with the head, the TCN's size (Bai et al. Table 1)
GRU_HIDDEN = 150  # 70,360 parameters with the head
PYTORCH_TCN_VERSION = "1.2.3"


class LastStepModel(nn.Module):
    """body (N, C_in, T) -> (N, C, T), then a linear map of the last step -> (N, classes)."""

    def __init__(self, body: nn.Module, width: int, classes: int = CLASSES):
        super().__init__()
        self.body = body
        self.head = LastStepHead(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _torchtcn(low_memory: bool) -> nn.Module:
    from ..model import TCN

    body = TCN(
        IN_CHANNELS, TCN_WIDTHS, kernel_size=TCN_KERNEL, norm="weight", dropout=TCN_DROPOUT,
        low_memory=low_memory,
    )
    return LastStepModel(body, TCN_WIDTHS[-1])


def _pytorch_tcn() -> nn.Module:
    import pytorch_tcn  # the peer; `pip install pytorch-tcn==1.2.3` (extra "bench")

    body = pytorch_tcn.TCN(
        IN_CHANNELS, TCN_WIDTHS, kernel_size=TCN_KERNEL, dropout=TCN_DROPOUT,
        use_norm="weight_norm", causal=True,
    )
    return LastStepModel(body, TCN_WIDTHS[-1])


def _recurrent(cell: str, hidden: int) -> nn.Module:
    from ..baselines import GRU, LSTM  # torch's nn.LSTM / nn.GRU behind the (N, C, T) contract

    body = (LSTM if cell == "lstm" else GRU)(IN_CHANNELS, hidden)
    return LastStepModel(body, hidden)


@dataclass(frozen=True)
class Contender:
    """A model of the benchmark: ``key`` on the command line, ``label`` in tables."""

    key: str
    label: str
    build: Callable[[], nn.Module]
    requires: str | None = None  # importable module it needs (a peer library)


CONTENDERS = {
    c.key: c
    for c in (
        Contender("torchtcn", "torchtcn", lambda: _torchtcn(False)),
        Contender("torchtcn-lowmem", "torchtcn low_memory", lambda: _torchtcn(True)),
        Contender(
            "pytorch-tcn", f"pytorch-tcn {PYTORCH_TCN_VERSION}", _pytorch_tcn, "pytorch_tcn"
        ),
        Contender("lstm", f"LSTM-{LSTM_HIDDEN}", lambda: _recurrent("lstm", LSTM_HIDDEN)),
        Contender("gru", f"GRU-{GRU_HIDDEN}", lambda: _recurrent("gru", GRU_HIDDEN)),
    )
}
PEER = "pytorch-tcn"
RNN_PEER = "lstm"


def parse_contenders(text: str) -> list[str]:
    """Comma-separated contender keys -> list, checked against :data:`CONTENDERS`."""
    keys = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))  # once each
    unknown = [k for k in keys if k not in CONTENDERS]
    if unknown or not keys:
        raise ValueError(f"models must be a comma list of {sorted(CONTENDERS)}, got {text!r}")
    return keys


def available(key: str) -> str | None:
    """None if the contender can run here, else why not."""
    module = CONTENDERS[key].requires
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as e:
        return f"{module} is not installed ({e}); pip install 'torchtcn[bench]'"
    return None


def batch(batch_size: int, seq_len: int, device, seed: int = 0):
    """A synthetic (x, y) batch of the paper's shapes: x (N, 1, T), y (N,) class indices."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, IN_CHANNELS, seq_len, generator=g)
    y = torch.randint(0, CLASSES, (batch_size,), generator=g)
    return x.to(device), y.to(device)


@dataclass(frozen=True)
class StepOptions:
    """How the training step runs: mixed precision and compilation."""

    amp: str | None = None  # None | "bf16" | "fp16" (fp16 uses a GradScaler; CUDA only)
    compile: bool = False
    every_step: bool = False  # loss at every step (the head at each step), not the last only

    @property
    def suffix(self) -> str:
        parts = ([self.amp] if self.amp else []) + (["compile"] if self.compile else [])
        return " + ".join(parts)


def make_step(model: nn.Module, device, options: StepOptions = StepOptions()):
    """A closure ``step(x, y)`` running one training step on ``device``: forward,
    cross-entropy, backward and an Adam update (mixed precision / compiled per ``options``)."""
    device = torch.device(device)
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if options.compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[options.amp]
    if options.amp == "fp16" and device.type != "cuda":
        raise ValueError(f"fp16 training needs CUDA (bf16 runs on the CPU), got device {device}")
    scaler = torch.amp.GradScaler(device.type) if options.amp == "fp16" else None

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            if options.every_step:  # dense gradients: the same head applied at every step
                logits = model.head.linear(model.body(x).transpose(1, 2))  # (N, T, classes)
                steps = y.view(-1, 1).expand(-1, x.shape[-1])
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), steps.reshape(-1))
            else:
                loss = F.cross_entropy(forward(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    return step


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], object]], repeats: int, warmup: int, device="cpu"
) -> dict[str, list[float]]:
    """Seconds per call of each step, measured round-robin so that a slow spell of the machine
    hits every contender alike (the start of the round rotates to avoid an order bias)."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "n": len(values)}


def parameters(model: nn.Module) -> int:
    return count_parameters(model)


def command_line(args) -> str:
    """The command that ran, as a report records it (``torchtcn bench stream --streams 1``)."""
    words = getattr(args, "argv", None)
    return "torchtcn " + " ".join(shlex.quote(w) for w in (sys.argv[1:] if words is None else words))


def machine() -> dict:
    """Where the numbers come from."""
    import platform

    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import pytorch_tcn  # noqa: F401
        from importlib.metadata import version

        info["pytorch-tcn"] = version("pytorch-tcn")
    except Exception:  # the peer is optional
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


# -- the C allocator ------------------------------------------------------------------------------
# Environment of a child process per allocator setting. glibc's defaults move its mmap and trim
# thresholds with the history of frees, so the page faults a training step pays (tens of
# thousands a step at these sizes, a large share of its time) depend on what ran before in the
# process; "tuned" fixes the thresholds so that freed memory is reused and no model pays them;
# "live" returns every block of >= 128 KiB to the system when freed (for memory peaks).
ALLOCATORS = {
    "glibc": {},
    "tuned": {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"},
    "live": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}


def child_env(allocator: str) -> dict:
    """``os.environ`` with the C allocator set up per ``allocator`` (a key of ALLOCATORS)."""
    import os

    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {sorted(ALLOCATORS)}, got {allocator!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(ALLOCATORS[allocator])
    return env


def run_child(module: str, argv: list[str], allocator: str, timeout: float = 1800):
    """Run ``python -m module argv...`` in a fresh process; its last stdout line, as JSON."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", module, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(allocator),
                          timeout=timeout)
    if proc.returncode != 0:
        raise ValueError(
            f"{module} {' '.join(argv)} failed (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- output -------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=_jsonable)
        f.write("\n")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
