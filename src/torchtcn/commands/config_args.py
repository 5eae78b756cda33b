"""Generate argparse options from a config dataclass (help text from the field metadata),
so the CLI never drifts from the library's arguments (nanoGPT / fairseq style)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (the message quotes what was typed)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (the message quotes what was typed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, found {text!r}")
    return value


def positive_int_list(text: str) -> list[int]:
    """argparse type: ``"1,64,1024"`` -> ``[1, 64, 1024]``, each >= 1, at least one."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers >= 1 separated by commas (e.g. 1,64), found {text!r}")
    return values


def choice_list(choices):
    """argparse type: a comma list of some of ``choices`` (at least one), e.g. ``tuned,glibc``."""
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {', '.join(sorted(choices))}, found {text!r}")
        return values

    return parse


def parse_int_list(text: str) -> tuple[int, ...]:
    """``"25,25,25"``, ``"25*3"`` or ``"32*2,64"`` -> a tuple of ints.

    Raises:
        ValueError: a part is not an int, or a repeat count is below 1 (which would drop the
            part silently).
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value, _, times = part.partition("*")
        try:
            count = int(times) if times else 1
            item = int(value)
        except ValueError:
            raise ValueError(f"expected ints like 25,25 or 25*8, found {part!r}") from None
        if count < 1:
            raise ValueError(f"the repeat count in {part!r} must be >= 1, found {count}")
        out += [item] * count
    return tuple(out)


def _int_list_argument(text: str) -> tuple[int, ...]:
    # argparse shows an ArgumentTypeError's own message (a ValueError's only as "invalid value")
    try:
        return parse_int_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_optional_str(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "") else text


def _parse_optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "") else float(text)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(tp: Any):
    args = set(typing.get_args(tp))
    if tp is int:
        return int
    if tp is float:
        return float
    if tp is bool:
        return _parse_bool
    if tp is str:
        return str
    if tp == str | None or args == {str, type(None)}:
        return _parse_optional_str
    if args == {float, type(None)}:
        return _parse_optional_float
    if typing.get_origin(tp) is tuple or tuple[int, ...] in args:
        return _int_list_argument
    raise TypeError(f"no command-line converter for {tp!r}")


def add_config_arguments(
    parser: argparse.ArgumentParser, config_cls: type, skip: tuple[str, ...] = ()
) -> None:
    """One ``--field-name`` option per field of ``config_cls``, defaults and help included."""
    hints = typing.get_type_hints(config_cls)
    group = parser.add_argument_group(f"{config_cls.__name__} options")
    for f in dataclasses.fields(config_cls):
        if f.name in skip:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        shown = "required" if required else f"default: {default}"
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=_converter(hints[f.name]),
            default=default,
            required=required,
            help=_with_default(f.metadata.get("help", ""), shown),
        )


def _with_default(text: str, shown: str) -> str:
    # a help text that explains its own default ("default 2**i") is not given a second one
    return text if "default" in text else f"{text} ({shown})"


def config_kwargs(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The config fields picked out of parsed ``args``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
