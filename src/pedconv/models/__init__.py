"""Model registry, thin builders, the paper's published numbers and the authors' weights.

* :mod:`._registry`     ``register_model`` / ``create_model`` / ``list_models``
* :mod:`.zoo`           the registered builders (torchvision / timm architectures + ``convert``)
* :mod:`.detection`     SSD300 and Faster R-CNN + FPN on (PEDConv-)ResNets (Table 2)
* :mod:`.segmentation`  UperNet and dilated PSPNet on (PEDConv-)ResNets (Table 3; smp, imported lazily)
* :mod:`.paper`         the published params / FLOPs of those builders (``PAPER_NUMBERS``)
* :mod:`.cifar_resnet`  CIFAR-style ResNets for small images
* :mod:`.authors`       loading the authors' released checkpoints
* :mod:`.weights`       released weights with their metadata (``PEDConvResNet18_Weights``), ``create_model(weights=)``
* :mod:`.initialization` network-level initialisation rules (``init=`` of ``create_model``)
"""

from . import detection, segmentation, zoo  # noqa: F401  (registers the builders)
from ._registry import create_model, list_models, model_entrypoint, register_model
from .authors import AUTHORS_ARCHS, load_authors_checkpoint
from .cifar_resnet import CifarResNet, cifar_resnet
from .paper import PAPER_NUMBERS
from .weights import PEDConvResNet18_Weights, Weights, WeightsEnum, get_weights, weights_dir

__all__ = [
    "AUTHORS_ARCHS",
    "PAPER_NUMBERS",
    "CifarResNet",
    "PEDConvResNet18_Weights",
    "Weights",
    "WeightsEnum",
    "cifar_resnet",
    "create_model",
    "get_weights",
    "list_models",
    "load_authors_checkpoint",
    "model_entrypoint",
    "register_model",
    "weights_dir",
]

