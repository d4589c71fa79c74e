"""The DDP probe for unused parameters (multi-process runs are in test_train.py)."""

from __future__ import annotations

import torch

import pedconv
from pedconv.training.distributed import needs_find_unused_parameters


def test_ddp_find_unused_parameters_only_when_needed() -> None:
    """The DDP probe: PEDConv's info-max decoders get gradients only through the info-max term."""
    cpu = torch.device("cpu")
    ped = pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=4)
    before = {k: v.clone() for k, v in ped.state_dict().items()}
    rng = torch.get_rng_state()
    assert not needs_find_unused_parameters(ped, (2, 1, 28, 28), cpu, pedconv.INFOMAX_WEIGHT)
    assert needs_find_unused_parameters(ped, (2, 1, 28, 28), cpu, 0.0)  # --infomax-weight 0: decoders unused
    # the probe runs on a copy, with the RNG forked: the model and the random stream are untouched
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in ped.state_dict().items())
    assert all(p.grad is None for p in ped.parameters())
    assert not needs_find_unused_parameters(pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4),
                                  (2, 1, 28, 28), cpu, 0.0)
