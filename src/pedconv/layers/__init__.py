"""Dynamic convolution layers."""

from .pedconv2d import ACTIVATIONS, COMPONENTS, ComponentGenerator, PEDConv2d

__all__ = ["ACTIVATIONS", "COMPONENTS", "ComponentGenerator", "PEDConv2d"]
