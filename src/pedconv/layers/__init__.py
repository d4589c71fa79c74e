"""Dynamic convolution layers: PEDConv (global and spatial) and the baselines it is compared with."""

from .condconv import CondConv2d
from .dyconv import DynamicConv2d, dyconv_temperature
from .odconv import ODConv2d
from .pedconv2d import ACTIVATIONS, COMPONENTS, ComponentGenerator, PEDConv2d
from .spatial_pedconv2d import SpatialPEDConv2d

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "ComponentGenerator",
    "CondConv2d",
    "DynamicConv2d",
    "ODConv2d",
    "PEDConv2d",
    "SpatialPEDConv2d",
    "dyconv_temperature",
]
