"""The dynamic convolutions PEDConv is compared with (Table 1), kept apart from the method.

Each is a drop-in ``nn.Conv2d`` with a ``from_conv`` classmethod (so
``pedconv.convert(model, layer=...)`` works) and ``macs`` / ``static_macs`` for the FLOP
counter. A new baseline is one more module here.

* :mod:`.condconv`  CondConv (Yang et al., NeurIPS 2019)
* :mod:`.dyconv`    DY-Conv (Chen et al., CVPR 2020)
* :mod:`.odconv`    ODConv (Li et al., ICLR 2022)
* :mod:`.dcd`       DCD (Li et al., ICLR 2021)
* :mod:`.weightnet` WeightNet (Ma et al., ECCV 2020)
* :mod:`.kernelwarehouse` KernelWarehouse (Li & Yao, ICML 2024)
* :mod:`.temperature` the annealed attention temperatures of DY-Conv and KernelWarehouse
"""

from .condconv import CondConv2d
from .dcd import DCDConv2d, DCDLinear, dcd_latent_dim
from .dyconv import DyConv2d, dyconv_temperature
from .kernelwarehouse import KernelWarehouse, KWConv2d, convert_to_kernelwarehouse, kw_temperature
from .odconv import ODConv2d
from .temperature import anneal_attention_temperatures, annealed_attention_layers
from .weightnet import WeightNetConv2d

__all__ = ["CondConv2d", "DyConv2d", "ODConv2d", "dyconv_temperature"]
__all__ += ["DCDConv2d", "DCDLinear", "dcd_latent_dim"]  # DCD
__all__ += ["WeightNetConv2d"]  # WeightNet
__all__ += ["KWConv2d", "KernelWarehouse", "convert_to_kernelwarehouse", "kw_temperature"]
__all__ += ["anneal_attention_temperatures", "annealed_attention_layers"]  # DY-Conv / KW temperature schedules
