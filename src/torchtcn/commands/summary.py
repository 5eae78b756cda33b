"""``torchtcn summary``: the per-block table of a saved model or of a TCN described by flags."""

from __future__ import annotations

import argparse

from ..model import TCN, TCNConfig
from ..summary import summary
from .config_args import add_config_arguments, config_kwargs
from .saved_model import load_saved_model


def add_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="per-block table (channels, dilation, receptive field, parameters)",
        description="Summarise a saved model (PATH) or a TCN built from the options, e.g. "
        "torchtcn summary --in-channels 1 --channels 25*8 --kernel-size 7",
        allow_abbrev=False,  # run() spots architecture flags beside PATH by their full names
    )
    p.add_argument("path", nargs="?", help="a model saved with torchtcn.save (.safetensors), "
                   "a training checkpoint (.ckpt) or a run folder")
    add_config_arguments(p, TCNConfig)
    # A saved model needs none of the architecture flags.
    for action in p._actions:
        action.required = False
    p.set_defaults(func=run)


def _architecture_flags_given(args: argparse.Namespace) -> list[str]:
    import dataclasses

    names = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(TCNConfig)}
    return [a.split("=", 1)[0] for a in getattr(args, "argv", []) if a.split("=", 1)[0] in names]


def run(args: argparse.Namespace) -> int:
    given = _architecture_flags_given(args) if args.path else []
    if given:  # a saved model has its own architecture: the flags would be silently ignored
        raise ValueError(f"{', '.join(given)} describe a TCN to build, but PATH {args.path} is a "
                         "saved model with its own architecture: give PATH or the flags, not both")
    if args.path:
        model = load_saved_model(args.path)
    else:
        if args.in_channels is None or args.channels is None:
            raise ValueError("give a saved model PATH, or --in-channels and --channels")
        model = TCN(**config_kwargs(args, TCNConfig))
    print(summary(model))
    return 0
