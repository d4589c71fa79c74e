"""The method: PEDConv's Eq. (1)-(7), and the layers that put them together.

* :mod:`.cp`          Eq. (1)-(2): the rank-R CP tensor and the per-sample weight
* :mod:`.generator`   Eq. (5), (7): the generator MLP and the Gaussian sampling
* :mod:`.infomax`     Eq. (6): the info-max decoder and the model-level loss
* :mod:`.base`        what every PEDConv layer shares (signature, options, Eq. 5-7 wiring)
* :mod:`.pedconv_nd`  :class:`PEDConv2d`, the drop-in ``nn.Conv2d`` (Sec. 3), and its 1-D/3-D siblings
  :class:`PEDConv1d`, :class:`PEDConv3d`: one implementation (:class:`PEDConvNd`)
* :mod:`.spatial_pedconv2d`   :class:`SpatialPEDConv2d`, per-pixel factors (Sec. 4.6)

How the per-sample convolution is executed lives in :mod:`pedconv.execution`.
"""

from .base import PEDConvBase
from .cp import COMPONENTS, CPFactors, compose_weight, cp_tensor
from .generator import ACTIVATIONS, ComponentGenerator
from .infomax import INFOMAX_WEIGHT, InfomaxDecoder, infomax_loss, strip_infomax
from .pedconv_nd import PEDConv1d, PEDConv2d, PEDConv3d, PEDConvNd
from .spatial_pedconv2d import SpatialPEDConv2d

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "INFOMAX_WEIGHT",
    "CPFactors",
    "ComponentGenerator",
    "InfomaxDecoder",
    "PEDConv1d",
    "PEDConv2d",
    "PEDConv3d",
    "PEDConvBase",
    "PEDConvNd",
    "SpatialPEDConv2d",
    "compose_weight",
    "cp_tensor",
    "infomax_loss",
    "strip_infomax",
]
