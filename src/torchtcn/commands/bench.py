"""``torchtcn bench NAME``: speed and memory benchmarks against the peers.

Each benchmark is a module ``torchtcn.bench.<name>`` exposing ``add_arguments(parser)`` and
``run(args) -> int``; it prints its table (ratios against the peers measured in the same run).
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help). Modules are imported only when their benchmark runs.
BENCHMARKS = {
    "stream": ("torchtcn.bench.stream", "streaming step latency and throughput"),
    "train": ("torchtcn.bench.train", "training-step time vs pytorch-tcn, LSTM and GRU"),
    "memory": ("torchtcn.bench.memory", "peak training memory vs pytorch-tcn and LSTM"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks against the peers")
    bench_sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bench_sub.required = True
    for name, (module, help_text) in BENCHMARKS.items():
        bp = bench_sub.add_parser(
            name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        bp.set_defaults(func=_runner(module), _bench_module=module)
        try:
            importlib.import_module(module).add_arguments(bp)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            bp.set_defaults(func=_missing(name))


def _runner(module: str):
    def run(args) -> int:
        if getattr(args, "device", None) is not None:
            from ..train import resolve_device

            # a clear error before anything is built; "auto" becomes the device it means
            device = resolve_device(args.device)
            if device.type not in ("cpu", "cuda"):  # e.g. meta: timings of nothing
                raise ValueError(f"--device must be cpu or cuda for a benchmark, got {args.device}")
            args.device = str(device)
        # written at the end: an unwritable path fails now, not after the run
        for flag in ("json", "markdown"):
            if getattr(args, flag, None):
                _check_output_path(args, flag)
        if getattr(args, "sweep", False) and getattr(args, "plot", None):
            _check_output_path(args, "plot")
        return importlib.import_module(module).run(args)

    return run


def _check_output_path(args, flag: str) -> None:
    from pathlib import Path

    from ..checkpoint import check_output_dir

    path = getattr(args, flag)
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--{flag} {path} is a folder; give a file name")
    try:
        check_output_dir(target.parent, what="the results")
    except ValueError as e:
        raise ValueError(f"--{flag}: {e}") from None


def _missing(name: str):
    def run(args) -> int:
        raise ValueError(f"benchmark {name!r} is not available in this build")

    return run
