"""Model definitions."""

from .cifar_resnet import CifarResNet, cifar_resnet

__all__ = ["CifarResNet", "cifar_resnet"]
