"""Weight initialisations by name: PyTorch's defaults or Xavier (Glorot), as in the FDS paper.

``xavier``: every Conv/Linear weight W ~ N(0, 2 / (fan_in + fan_out)) (``xavier_normal_``,
gain 1), biases 0; BatchNorm scale 1, shift 0.
"""

from __future__ import annotations

from torch import nn

INITS = ("default", "xavier")


def initialise(model: nn.Module, init: str) -> nn.Module:
    """Re-initialise ``model`` in place with ``init`` (one of INITS) and return it."""
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; known initialisations are "
                         f"{list(INITS)}")
    if init == "xavier":
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model
