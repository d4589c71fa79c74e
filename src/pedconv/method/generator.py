"""Eq. (5) and (7): the generator of the CP factors, and their Gaussian sampling.

* Eq. (7): ``G(x) = W_fc2 (W_fc1 x)_+`` on a feature vector (the globally pooled input, or
  one pixel's channel vector for the spatial layer) gives the mean ``mu`` (and optionally
  the std) of ``p(g | x)``.
* Eq. (5): training samples ``g = mu + sigma * eps`` (reparameterisation trick); evaluation
  uses ``g = mu``. An activation maps ``g`` to the component values.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACTIVATIONS", "ComponentGenerator", "sample_g"]


def _scaled_sigmoid(z: Tensor) -> Tensor:
    return 2.0 * torch.sigmoid(z)


def _one_plus_tanh(z: Tensor) -> Tensor:
    return 1.0 + torch.tanh(z)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "scaled_sigmoid": _scaled_sigmoid,
    "sigmoid": torch.sigmoid,
    "one_plus_tanh": _one_plus_tanh,
    "exp": torch.exp,
}
"""Maps the sampled pre-activation ``g`` to a component value.

``"sigmoid"`` is the authors' choice (components start at 0.5). The default
``"scaled_sigmoid"`` (``2 * sigmoid``) has the same shape but starts at exactly 1 with
zero-initialised heads, so a converted layer reproduces its static convolution without
rescaling ``W_base`` (see the docs, "Layers and conversion", for the measured effect).
"""


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class ComponentGenerator(nn.Module):
    """The bottleneck MLP of Eq. (7): ``Linear(Cin -> hidden) -> ReLU -> head``.

    The head outputs the Gaussian mean ``mu`` of every enabled component for every rank,
    laid out ``[gamma (R*Cout) | phi (R*Cin/groups) | psi (R*kh*kw)]``, followed by the
    same layout again for the std pre-activation when ``learn_sigma`` is set.
    Applied to the last dimension, so it serves both the pooled vector (``(B, Cin)``)
    and per-pixel vectors.

    Args:
        in_features: ``Cin``.
        hidden: bottleneck width ``Cin / r``.
        out_features: length of ``mu``.
        learn_sigma: also output a std pre-activation (``softplus`` gives ``sigma``).
        sigma_init: initial ``sigma`` when learned.

    Example:
        >>> gen = ComponentGenerator(64, 4, 10, learn_sigma=True)
        >>> with torch.no_grad():
        ...     mu, sigma = gen(torch.randn(2, 64))
        >>> mu.shape, round(float(sigma[0, 0]), 3)
        (torch.Size([2, 10]), 0.1)
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        learn_sigma: bool = False,
        sigma_init: float = 0.1,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.out_features = out_features
        self.learn_sigma = learn_sigma
        self.sigma_init = sigma_init
        self.fc_share = nn.Linear(in_features, hidden, **dd)
        self.head = nn.Linear(hidden, out_features * (2 if learn_sigma else 1), **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc_share.reset_parameters()
        # Zero heads: every component starts at activation(0) for every input, which is
        # what makes conversion of a trained static conv exact (see PEDConv2d.from_conv).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.learn_sigma:
            with torch.no_grad():
                self.head.bias[self.out_features :].fill_(_softplus_inverse(self.sigma_init))

    def forward(self, features: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Return ``(mu, sigma)``; ``sigma`` is ``None`` unless learned."""
        # F.linear on the submodules' parameters: same math, without two Module calls'
        # dispatch overhead on every forward (it shows at batch 1).
        hidden = F.relu(F.linear(features, self.fc_share.weight, self.fc_share.bias))
        out = F.linear(hidden, self.head.weight, self.head.bias)
        if not self.learn_sigma:
            return out, None
        mu, rho = out.split(self.out_features, dim=-1)
        return mu, F.softplus(rho)


def sample_g(mu: Tensor, sigma: Union[Tensor, float, None], sample: bool) -> Tensor:
    """Eq. (5): ``g = mu + sigma * eps`` when ``sample`` (training), else ``g = mu``.

    Example:
        >>> mu = torch.zeros(3, 4)
        >>> torch.equal(sample_g(mu, 0.1, sample=False), mu)
        True
    """
    if not sample or sigma is None:
        return mu
    # Reparameterisation trick, one fused op (a kernel launch counts on a GPU): add with
    # alpha for a fixed sigma, addcmul for a learned one. The noise comes from torch's
    # generator, so it is reproducible under torch.manual_seed and CUDA-graph safe.
    eps = torch.randn_like(mu)
    if isinstance(sigma, Tensor):
        return torch.addcmul(mu, sigma, eps)
    return torch.add(mu, eps, alpha=float(sigma))
