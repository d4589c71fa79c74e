"""The dynamic convolutions PEDConv is compared with (Table 1), kept apart from the method.

Each is a drop-in ``nn.Conv2d`` with a ``from_conv`` classmethod (so
``pedconv.convert(model, layer=...)`` works) and ``macs`` / ``static_macs`` for the FLOP
counter. A new baseline is one more module here.

* :mod:`.condconv`  CondConv (Yang et al., NeurIPS 2019)
* :mod:`.dyconv`    DY-Conv (Chen et al., CVPR 2020)
* :mod:`.odconv`    ODConv (Li et al., ICLR 2022)
* :mod:`.kernelwarehouse` KernelWarehouse (Li & Yao, ICML 2024)
"""

from .condconv import CondConv2d
from .dyconv import DyConv2d, dyconv_temperature
from .kernelwarehouse import KernelWarehouse, KWConv2d, convert_to_kernelwarehouse, kw_temperature
from .odconv import ODConv2d

__all__ = ["CondConv2d", "DyConv2d", "ODConv2d", "dyconv_temperature"]
__all__ += ["KWConv2d", "KernelWarehouse", "convert_to_kernelwarehouse", "kw_temperature"]
