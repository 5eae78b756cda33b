"""torchtcn: Temporal Convolutional Networks for PyTorch.

Example:
    >>> import torch, torchtcn
    >>> model = torchtcn.TCN(in_channels=1, channels=[25] * 8, kernel_size=7)
    >>> model(torch.randn(2, 1, 100)).shape
    torch.Size([2, 25, 100])
"""

from . import receptive_field
from .baselines import GRU, LSTM, RNN, RecurrentConfig, RecurrentState
from .diagnostics import check_causality, measure_receptive_field
from .heads import (
    LanguageModel,
    LastStepHead,
    MeanPoolHead,
    PerStepHead,
    PooledState,
    ReceptiveFieldWarning,
    SequenceModel,
)
from .io import load, save
from .model import TCN, TCNConfig
from .receptive_field import blocks_for_history, plan_dilations
from .registry import available_models, create_model, register_model
from .summary import count_parameters, summary
from .streaming import TCNState
from .generate import generate
from .uncertainty import mc_dropout, mc_predict
from .export import (
    export_onnx,
    export_step_onnx,
    export_step_program,
    export_step_torchscript,
    export_torchscript,
)

__version__ = "0.1.0"

__all__ = [
    "TCN",
    "TCNConfig",
    "LSTM",
    "GRU",
    "RNN",
    "RecurrentConfig",
    "RecurrentState",
    "LastStepHead",
    "PerStepHead",
    "MeanPoolHead",
    "PooledState",
    "SequenceModel",
    "LanguageModel",
    "ReceptiveFieldWarning",
    "save",
    "load",
    "summary",
    "count_parameters",
    "receptive_field",
    "blocks_for_history",
    "plan_dilations",
    "measure_receptive_field",
    "check_causality",
    "available_models",
    "create_model",
    "register_model",
    "TCNState",
    "generate",
    "mc_dropout",
    "mc_predict",
    "export_onnx",
    "export_step_onnx",
    "export_step_torchscript",
    "export_step_program",
    "export_torchscript",
]
