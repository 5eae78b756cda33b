"""``torchtcn download``: fetch a benchmark data set (or a task's data) into the data folder.

Each file is verified by checksum where one is published and moved into place atomically
(see :mod:`torchtcn.data.download`); files already there are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from ..data.download import DATASETS, download
from ..data.paths import resolve_data_dir


def _tasks_with_data() -> list[str]:
    from ..tasks import available_tasks, get_task

    return [t for t in available_tasks() if get_task(t).default_downloads]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "download",
        help="download a benchmark data set (needs internet access)",
        description="Download data sets by name (" + ", ".join(sorted(DATASETS)) + ") or the "
        "data of a task (" + ", ".join(_tasks_with_data()) + "; the synthetic tasks and those "
        "on your own files have none), e.g. torchtcn download jsb --data-dir data. Checksums "
        "are verified where a published one is known (MNIST, JSB, Nottingham, PTB).",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="data set or task name")
    p.add_argument("--data-dir", default=None,
                   help="destination (default: $TORCHTCN_DATA, else ./data or ../shared/data)")
    p.add_argument("--overwrite", action="store_true", help="fetch again files already there")
    p.set_defaults(func=run)


def data_sets_for(names: list[str]) -> list[str]:
    """Data set names for ``names`` (data sets or task names), in order, without repeats."""
    from ..tasks import available_tasks, get_task

    out: list[str] = []
    for name in names:
        if name in DATASETS:
            sets: tuple[str, ...] = (name,)
        elif name in available_tasks():
            sets = get_task(name).default_downloads
            if not sets:
                raise ValueError(f"task {name!r} reads no downloadable data set (synthetic data, "
                                 "or your own files given with --data)")
        else:
            raise ValueError(f"unknown data set or task {name!r}; data sets: "
                             f"{', '.join(sorted(DATASETS))}; tasks: "
                             f"{', '.join(available_tasks())}")
        out += [s for s in sets if s not in out]
    return out


def run(args: argparse.Namespace) -> int:
    sets = data_sets_for(args.names)  # every name checked before anything is fetched
    root = resolve_data_dir(args.data_dir)
    for name in sets:
        download(name, root, overwrite=args.overwrite)
        print(f"{name}: ready in {root}")
    return 0
