"""Model registry and builders."""

from . import zoo  # noqa: F401  (registers the builders)
from ._registry import create_model, list_models, model_entrypoint, register_model
from .cifar_resnet import CifarResNet, cifar_resnet

__all__ = ["CifarResNet", "cifar_resnet", "create_model", "list_models", "model_entrypoint", "register_model"]
