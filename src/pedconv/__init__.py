"""pedconv: Parameter Efficient Dynamic Convolution (Hou & Kung, BMVC 2021) for PyTorch.

>>> import torch, torchvision, pedconv
>>> model = pedconv.convert(torchvision.models.resnet18())
>>> model.eval()(torch.randn(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""

from .checkpoints import load_reference_checkpoint
from .convert import CONV_KINDS, conv_kind, convert, select_convs
from .infomax import INFOMAX_WEIGHT, infomax_loss, strip_infomax
from .layers import ACTIVATIONS, COMPONENTS, ComponentGenerator, PEDConv2d, SpatialPEDConv2d
from .models import create_model, list_models, register_model
from .ops import STRATEGIES, dynamic_conv2d
from .profile import ModelProfile, profile_model

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "CONV_KINDS",
    "INFOMAX_WEIGHT",
    "ModelProfile",
    "STRATEGIES",
    "ComponentGenerator",
    "PEDConv2d",
    "SpatialPEDConv2d",
    "__version__",
    "conv_kind",
    "convert",
    "create_model",
    "dynamic_conv2d",
    "infomax_loss",
    "list_models",
    "load_reference_checkpoint",
    "profile_model",
    "register_model",
    "select_convs",
    "strip_infomax",
]
