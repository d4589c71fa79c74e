"""Network-level initialisation rules, applied by :func:`~pedconv.create_model` after a builder.

Their own module so that the registry and the authors' loader (which builds models through the
registry) both import it without importing each other.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["INITS", "apply_init", "authors_init", "check_init"]


def authors_init(model: nn.Module) -> nn.Module:
    """The authors' network-level initialisation (their ``image_classification/resnet.py``),
    applied after the model is built: every ``nn.Linear`` (the classifier and each dynamic
    layer's generator and decoder) drawn from N(0, 0.01) with a zero bias, and every BatchNorm
    weight set to 0.5. Convolutions keep their own initialisation. Returns ``model``.

    Example:
        >>> import torch.nn as nn
        >>> m = authors_init(nn.Sequential(nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2)))
        >>> m[0].weight.tolist(), m[2].bias.tolist(), round(float(m[2].weight.detach().std()), 1) < 0.1
        ([0.5, 0.5, 0.5, 0.5], [0.0, 0.0], True)
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                nn.init.constant_(m.weight, 0.5)
    return model


INITS = ("default", "authors")
"""The values of :func:`~pedconv.create_model`'s ``init``: each builder's own, or :func:`authors_init`."""


def apply_init(model: nn.Module, init: str) -> nn.Module:
    """Apply the network-level initialisation named ``init`` (one of :data:`INITS`) to ``model``.

    >>> apply_init(nn.Linear(2, 2), "kaiming")
    Traceback (most recent call last):
    ...
    ValueError: init='kaiming': expected one of ('default', 'authors')
    """
    check_init(init)
    return authors_init(model) if init == "authors" else model


def check_init(init: str) -> None:
    """Raise a one-line ``ValueError`` unless ``init`` is one of :data:`INITS`."""
    if init not in INITS:
        raise ValueError(f"init={init!r}: expected one of {INITS}")
