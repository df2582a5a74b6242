"""Networks by name, all usable with ``torch.func.functional_call`` and the FDS engine."""

from .init import INITS, initialise
from .registry import build_model, is_known_model, known_models, register_model
from .small import LeNet5, mlp
from .wrn import WideResNet

__all__ = ["INITS", "LeNet5", "WideResNet", "build_model", "initialise", "is_known_model",
           "known_models", "mlp", "register_model"]
