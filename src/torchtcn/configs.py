"""Config dataclasses <-> plain JSON dicts, with strict checking.

Configs travel through JSON (saved models, checkpoints, the CLI), so reading one back must
reject unknown keys and wrong types with a message naming the field, instead of building a
model that silently differs from the one that was saved.

Example:
    >>> from torchtcn.model import TCNConfig
    >>> cfg = config_from_dict(TCNConfig, {"in_channels": 1, "channels": [8, 8]})
    >>> cfg.channels
    (8, 8)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

C = TypeVar("C")


def field_help(cls: type, name: str) -> str:
    """The ``help`` text attached to a config field (used by the CLI)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it normalised (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is not None and len(options) == 1:
            # Optional[X] given a value: X's own error names the bad element (``x[1]``).
            return _coerce(name, value, options[0])
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(name, value, option)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{name} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is type(None):
        if value is not None:
            raise TypeError(f"{name} must be None, got {value!r}")
        return None
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list, got {type(value).__name__} {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if value != value:  # NaN (Python's json reads the non-standard token) passes range checks
            raise ValueError(f"{name} must be a number, got NaN")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise TypeError(
                f"{name} must be {tp.__name__}, got {type(value).__name__} {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        return config_from_dict(tp, value)
    if isinstance(tp, type) and tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")


def config_from_dict(cls: type[C], data: Any) -> C:
    """Build config dataclass ``cls`` from a dict, rejecting unknown keys and wrong types.

    Raises:
        TypeError: ``data`` is not a dict, or a value has the wrong type.
        ValueError: an unknown or missing key (the message lists the valid ones).
    """
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be read from a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__} is missing the required key {name!r}")
            continue
        kwargs[name] = _coerce(name, data[name], hints[name])
    return cls(**kwargs)


def check_config_type(cls: type, config: Any) -> None:
    """A TypeError unless ``config`` is an instance of ``cls.config_class`` (what
    ``cls.from_config`` takes)."""
    if not isinstance(config, cls.config_class):
        raise TypeError(f"expected a {cls.config_class.__name__}, got {type(config).__name__}")


class ConfiguredModel:
    """Mixin for models built from one frozen config dataclass whose fields are exactly the
    constructor's arguments: provides ``config``, ``from_config``, ``in_channels`` and
    ``layout``. The class sets ``config_class``; ``__init__`` stores ``self._config``."""

    config_class: type

    @property
    def config(self):
        """The frozen config this model was built from (``from_config`` rebuilds it)."""
        return self._config

    @classmethod
    def from_config(cls, config):
        """A freshly initialised model with the architecture ``config`` describes."""
        check_config_type(cls, config)
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    @property
    def in_channels(self) -> int:
        return self._config.in_channels

    @property
    def layout(self) -> str:
        return self._config.layout
