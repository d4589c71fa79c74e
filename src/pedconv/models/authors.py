"""Load the authors' released PEDConv checkpoints into pedconv models.

Their layout (facts of the released code, mapped here, not copied): a torchvision-like
ResNet whose dynamic convs hold ``weight`` (no bias), ``attn.fc_share`` (Cin -> Cin/16),
the heads ``attn.fc_inp`` (-> Cin/groups), ``attn.fc_oup`` (-> Cout), ``attn.fc_k`` (-> k^2),
and the info-max decoder ``attn.decoder.0`` / ``attn.decoder.2`` whose input is
``concat(inp, oup, k)``. Components are ``sigmoid`` of the sampled pre-activation (sigma 0.1).
State dicts saved under DDP carry a ``module.`` prefix and may sit under ``"state_dict"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn
from torch import Tensor

from ..method.pedconv_nd import PEDConv2d
from ._registry import create_model

__all__ = ["AUTHORS_ARCHS", "is_authors_state_dict", "load_authors_checkpoint", "read_state_dict"]

AUTHORS_ARCHS = ("resnet18", "resnet50")


def is_authors_state_dict(weights: Mapping[str, Tensor]) -> bool:
    """Whether ``weights`` are in the authors' layout (their attention modules, ``*.attn.fc_share.*``).

    >>> is_authors_state_dict({"layer1.0.conv1.attn.fc_share.weight": torch.zeros(1)})
    True
    """
    return any(".attn.fc_share." in k for k in weights)


def read_state_dict(source: Union[str, os.PathLike, Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """A state dict from a file or mapping: torchvision's, timm's and the authors' files (the tensors
    optionally under ``state_dict``, names optionally prefixed by DataParallel's ``module.``).

    >>> read_state_dict({"state_dict": {"module.fc.bias": torch.zeros(2)}})
    {'fc.bias': tensor([0., 0.])}
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated/corrupt files
            raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    else:
        obj = source
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("checkpoint must be a state dict of tensors (optionally under 'state_dict')")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_authors_checkpoint(
    source: Union[str, os.PathLike, Mapping[str, Tensor]], arch: str, num_classes: int = 1000
) -> nn.Module:
    """Build ``pedconv_<arch>`` in the authors' configuration and load their weights.

    Args:
        source: a checkpoint path, or an already loaded state dict.
        arch: ``"resnet18"`` or ``"resnet50"``.
        num_classes: classifier size of the checkpoint.

    Returns:
        The model (eval mode) whose eval outputs equal the authors' model's.

    Example:
        >>> model = load_authors_checkpoint("pedconv_resnet18.pth", "resnet18")  # doctest: +SKIP
    """

    if arch not in AUTHORS_ARCHS:
        raise ValueError(f"arch must be one of {AUTHORS_ARCHS}, got {arch!r}")
    theirs = read_state_dict(source)
    model = create_model(f"pedconv_{arch}", num_classes=num_classes, activation="sigmoid",
                         preserve_function=False, sigma=0.1, min_hidden=1)
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    for name, m in model.named_modules():
        if not isinstance(m, PEDConv2d):
            continue
        a = f"{name}.attn."
        try:
            mapped[f"{name}.weight"] = theirs.pop(f"{name}.weight")
            for p in ("weight", "bias"):
                mapped[f"{name}.generator.fc_share.{p}"] = theirs.pop(f"{a}fc_share.{p}")
                # Our fused head is [gamma | phi | psi] = [oup | inp | k].
                mapped[f"{name}.generator.head.{p}"] = torch.cat(
                    [theirs.pop(f"{a}fc_oup.{p}"), theirs.pop(f"{a}fc_inp.{p}"), theirs.pop(f"{a}fc_k.{p}")], 0
                )
                mapped[f"{name}.decoder.2.{p}"] = theirs.pop(f"{a}decoder.2.{p}")
                mapped[f"{name}.decoder.0.{p}"] = theirs.pop(f"{a}decoder.0.{p}")
        except KeyError as e:
            raise ValueError(f"checkpoint lacks {e.args[0]!r} for the dynamic conv {name!r} ({arch})") from None
        # Their decoder input is concat(inp, oup, k); ours is (gamma=oup, phi=inp, psi=k).
        w0 = mapped[f"{name}.decoder.0.weight"]
        cin_g, cout = m.in_channels // m.groups, m.out_channels
        mapped[f"{name}.decoder.0.weight"] = torch.cat(
            [w0[:, cin_g : cin_g + cout], w0[:, :cin_g], w0[:, cin_g + cout :]], 1
        )
    for key in list(theirs):
        if key in ours:
            mapped[key] = theirs.pop(key)
    if theirs:
        raise ValueError(f"unexpected keys for {arch}: {sorted(theirs)[:8]}{' ...' if len(theirs) > 8 else ''}")
    missing = [k for k in ours if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"checkpoint lacks keys for {arch}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for k, v in mapped.items():
        if v.shape != ours[k].shape:
            raise ValueError(f"shape mismatch for {k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}")
    model.load_state_dict(mapped, strict=False)
    return model.eval()
