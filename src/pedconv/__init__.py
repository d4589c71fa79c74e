"""pedconv: Parameter Efficient Dynamic Convolution (Hou & Kung, BMVC 2021) for PyTorch.

The package reads as the architecture:

* :mod:`pedconv.method`      the method, Eq. (1)-(7): :class:`PEDConv2d`, :class:`SpatialPEDConv2d`
* :mod:`pedconv.execution`   how the per-sample convolution runs fast (exact strategies)
* :mod:`pedconv.baselines`   CondConv, DY-Conv, ODConv
* :mod:`pedconv.convert`     swapping the convolutions of any CNN
* :mod:`pedconv.models`      registry, builders, published numbers, the authors' weights
* :mod:`pedconv.training`    ``pedconv train / eval / compare``: data, loop, checkpoints, DDP
* :mod:`pedconv.tasks`       downstream tasks built on :mod:`pedconv.training`
* :mod:`pedconv.tools`       FLOP counting (``pedconv profile``) and ``pedconv bench``
* :mod:`pedconv.testing`     the slow reference implementations the tests compare against

>>> import torch, torchvision, pedconv
>>> model = pedconv.convert(torchvision.models.resnet18())
>>> model.eval()(torch.randn(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""

from .convert import CONV_KINDS, conv_kind, convert, select_convs
from .execution import STRATEGIES, pedconv_conv2d
from .method import (
    ACTIVATIONS,
    COMPONENTS,
    INFOMAX_WEIGHT,
    ComponentGenerator,
    CPFactors,
    PEDConv2d,
    SpatialPEDConv2d,
    compose_weight,
    infomax_loss,
    strip_infomax,
)
from .models import create_model, list_models, load_authors_checkpoint, register_model
from .tools.flops import ModelProfile, profile_model

load_reference_checkpoint = load_authors_checkpoint
"""The former name of :func:`load_authors_checkpoint` ("reference" now means the test
oracles in :mod:`pedconv.testing` only); kept so that existing code keeps working."""

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "COMPONENTS",
    "CONV_KINDS",
    "INFOMAX_WEIGHT",
    "STRATEGIES",
    "CPFactors",
    "ComponentGenerator",
    "ModelProfile",
    "PEDConv2d",
    "SpatialPEDConv2d",
    "__version__",
    "compose_weight",
    "conv_kind",
    "convert",
    "create_model",
    "infomax_loss",
    "list_models",
    "load_authors_checkpoint",
    "pedconv_conv2d",
    "profile_model",
    "register_model",
    "select_convs",
    "strip_infomax",
]
