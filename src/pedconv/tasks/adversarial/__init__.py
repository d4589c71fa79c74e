"""Adversarial robustness: Free adversarial training and PGD evaluation (pedconv adv).

Table 4 of the PEDConv paper: models trained with Free adversarial training (Shafahi et al.,
NeurIPS 2019, m = 4) against ℓ∞ ε = 4/255, evaluated on natural images and against PGD-10
and PGD-50 (Madry et al., ICLR 2018).

* :mod:`.attacks` -- :func:`parse_eps`, :class:`NormalizedModel` (normalisation inside, so
  attacks work on [0, 1] pixels), :func:`pgd_attack`, :func:`robust_accuracy`;
* :mod:`.free` -- :class:`FreeAdversarialStep`, the training step with its persistent δ;
* :mod:`.task` -- :class:`AdversarialTraining`, the ``pedconv adv`` task (options, data, model,
  step, metrics).
"""

from .attacks import PAPER_EPS, NormalizedModel, default_alpha, parse_eps, pgd_attack, robust_accuracy
from .free import FreeAdversarialStep
from .task import AdversarialTraining

__all__ = ["PAPER_EPS", "AdversarialTraining", "FreeAdversarialStep", "NormalizedModel", "default_alpha",
           "parse_eps", "pgd_attack", "robust_accuracy"]
