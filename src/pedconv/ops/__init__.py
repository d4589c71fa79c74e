"""Execution of the per-sample convolution: exact strategies and the dispatch between them."""

from .dynamic_conv import STRATEGIES, dynamic_conv2d, select_strategy
from .reference import compose_weight, conv2d_per_sample, spatial_conv2d_per_pixel
from .spatial import spatial_depthwise_conv2d

__all__ = [
    "STRATEGIES",
    "compose_weight",
    "conv2d_per_sample",
    "dynamic_conv2d",
    "select_strategy",
    "spatial_conv2d_per_pixel",
    "spatial_depthwise_conv2d",
]
