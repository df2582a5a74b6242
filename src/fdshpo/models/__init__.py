"""Networks by name, all usable with ``torch.func.functional_call`` and the FDS engine."""

from .small import LeNet5, build_model, mlp

__all__ = ["LeNet5", "build_model", "mlp"]
