"""Model registry: every model that can be built by name, saved, loaded and benchmarked.

A registered class has a ``config_class`` dataclass, a ``config`` property and a
``from_config`` classmethod. The shared test suite parametrizes over ``available_models()``,
so a new model is tested the moment it is registered (the timm ``create_model`` pattern).

Example:
    >>> import torchtcn
    >>> model = torchtcn.create_model("lstm", in_channels=2, hidden_size=16)
    >>> sorted(torchtcn.available_models())
    ['gru', 'lstm', 'rnn', 'tcn']
"""

from __future__ import annotations

from typing import Any

_MODELS: dict[str, type] = {}
_SEQUENCE_MODELS: set[str] = set()


def register_model(name: str, *, sequence_model: bool = True):
    """Class decorator registering a model under ``name``.

    ``sequence_model=True`` marks the (N, C_in, T) -> (N, C_out, T) bodies that the benchmark
    compares (tcn, lstm, ...); wrappers such as heads and language models pass False.
    """

    def wrap(cls: type) -> type:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"a model named {name!r} is already registered ({_MODELS[name]})")
        _MODELS[name] = cls
        cls.registry_name = name
        if sequence_model:
            _SEQUENCE_MODELS.add(name)
        return cls

    return wrap


def available_models() -> list[str]:
    """Names of the registered sequence models (the ``--model`` choices).

    Example:
        >>> available_models()
        ['gru', 'lstm', 'rnn', 'tcn']
    """
    return sorted(_SEQUENCE_MODELS)


def body_spec(body) -> dict[str, Any]:
    """``model_spec(body)`` for a model that a wrapper (a head, a language model) can hold:
    a registered sequence body, not another wrapper (it has no (N, C_out, T) output)."""
    spec = model_spec(body)
    if spec["name"] not in _SEQUENCE_MODELS:
        raise TypeError(f"the body must be a sequence model ({', '.join(available_models())}), "
                        f"got a {type(body).__name__}, which is a wrapper itself")
    return spec


def get_model_class(name: str) -> type:
    """The class registered as ``name`` (sequence models and wrappers)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(_MODELS)}")
    return _MODELS[name]


def create_model(name: str, **kwargs: Any):
    """Build the registered model ``name`` with constructor arguments ``kwargs``.

    Example:
        >>> import torch
        >>> lstm = create_model("lstm", in_channels=3, hidden_size=16)
        >>> lstm(torch.randn(2, 3, 10)).shape                          # (N, C, T) in and out
        torch.Size([2, 16, 10])
    """
    return get_model_class(name)(**kwargs)


def model_spec(model) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}``: everything needed to rebuild ``model``'s architecture."""
    from .configs import config_to_dict

    name = getattr(type(model), "registry_name", None)
    if name is None or _MODELS.get(name) is not type(model):
        raise TypeError(
            f"expected a registered torchtcn model, got {type(model).__name__}; "
            f"registered: {sorted(_MODELS)}"
        )
    return {"name": name, "config": config_to_dict(model.config)}


def model_from_spec(spec: Any):
    """Rebuild a model (freshly initialised) from ``model_spec`` output, checking every key."""
    from .configs import config_from_dict

    if not isinstance(spec, dict) or set(spec) != {"name", "config"}:
        raise ValueError(
            f"a model spec must be a dict with keys ['config', 'name'], got {spec!r:.200}"
        )
    if not isinstance(spec["name"], str):
        raise TypeError(f"model spec name must be a str, got {type(spec['name']).__name__}")
    cls = get_model_class(spec["name"])
    return cls.from_config(config_from_dict(cls.config_class, spec["config"]))
