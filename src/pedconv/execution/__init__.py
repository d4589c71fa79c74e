"""How the per-sample convolution of Eq. (3) is executed: exact strategies and their dispatch.

* :mod:`.dispatch`   the entry points :func:`pedconv_conv2d` (and ``1d``/``3d``), :data:`STRATEGIES`, ``auto``
* :mod:`.factored`, :mod:`.materialize`, :mod:`.hybrid`, :mod:`.slow`   one strategy each
* :mod:`.export`     the factored strategy's export form (tracing/ONNX): constant conv weights, lean graph
* :mod:`.spatial`    the spatial-dynamic (per-pixel) depthwise convolution
* :mod:`.geometry`   conv geometry (1-, 2- and 3-D) shared by every layer and strategy
* :mod:`._torch_specific`   export detection and autocast handling

The math itself (Eq. 1-7) lives in :mod:`pedconv.method`; the slow references the
strategies are tested against live in :mod:`pedconv.testing`.
"""

# The strategies use the math of pedconv.method (CPFactors, ...), whose layers use the
# strategies: importing the method first makes either package importable on its own.
from .. import method  # noqa: F401
from .dispatch import STRATEGIES, Strategy, pedconv_conv1d, pedconv_conv2d, pedconv_conv3d, select_strategy
from .geometry import ConvGeometry
from .materialize import MAX_WEIGHT_ELEMENTS
from .spatial import spatial_depthwise_conv2d

__all__ = [
    "MAX_WEIGHT_ELEMENTS",
    "STRATEGIES",
    "ConvGeometry",
    "Strategy",
    "pedconv_conv1d",
    "pedconv_conv2d",
    "pedconv_conv3d",
    "select_strategy",
    "spatial_depthwise_conv2d",
]
