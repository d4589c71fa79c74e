"""Build a registered model for a dataset: classes, input channels, and what was actually passed.

Models that take ``in_chans`` (the CIFAR-style ResNets, timm networks) get the dataset's
channel count; torchvision-based ones do not, and a 1-channel dataset is then replicated to
3 channels on the device (:class:`~pedconv.training.data.BatchPreprocessor`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..models import create_model, model_entrypoint

__all__ = ["ModelArgs", "build_model", "match_backbone", "start_from_run"]


@dataclass
class ModelArgs:
    """What :func:`build_model` passed to :func:`pedconv.create_model`, enough to rebuild it.

    ``input_chans`` is the number of channels the network expects; when it differs from the
    dataset's ``data_chans`` (1 -> 3), the batch is replicated.
    """

    name: str
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    data_chans: int = 3
    input_chans: int = 3

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (saved in checkpoints and results)."""
        return asdict(self)

    def build(self) -> nn.Module:
        """Rebuild the (randomly initialised) network."""
        return create_model(self.name, num_classes=self.num_classes, **self.kwargs)


def _takes_in_chans(builder: Any) -> bool:
    params = inspect.signature(builder).parameters
    return "in_chans" in params and params["in_chans"].kind != inspect.Parameter.VAR_KEYWORD


def _forwards_kwargs(builder: Any) -> bool:
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())


def build_model(name: str, num_classes: int, in_chans: int, model_kwargs: dict[str, Any] | None = None
                ) -> tuple[nn.Module, ModelArgs]:
    """``pedconv.create_model(name, num_classes=..., in_chans=..., **model_kwargs)`` with channel fallback.

    Raises:
        ValueError: unknown model (with close matches), or options the builder rejects (its
            ValueError, TypeError, AssertionError or RuntimeError, e.g. a negative width), with
            the model and the options named.

    >>> model, margs = build_model("cifar_resnet20", 10, 1, {"width": 8})
    >>> margs.kwargs, margs.input_chans
    ({'width': 8, 'in_chans': 1}, 1)
    >>> build_model("resnet18", 10, 1)[1].input_chans
    3
    """
    builder = model_entrypoint(name)  # ValueError with suggestions for unknown names
    kwargs = dict(model_kwargs or {})
    candidates = [kwargs]
    if "in_chans" not in kwargs:
        if _takes_in_chans(builder):
            candidates = [{**kwargs, "in_chans": in_chans}]
        elif _forwards_kwargs(builder) and in_chans != 3:
            # Builders that forward **kwargs may reach timm (which takes in_chans) or torchvision
            # (which does not); only trying tells.
            candidates = [{**kwargs, "in_chans": in_chans}, kwargs]
    error: Exception | None = None
    for kw in candidates:
        try:
            model = create_model(name, num_classes=num_classes, **kw)
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            error = e
            if "in_chans" in kw and "in_chans" not in kwargs and "in_chans" in str(e):
                continue
            break
        input_chans = int(kw.get("in_chans", 3))
        if input_chans != in_chans and in_chans != 1:
            raise ValueError(f"model {name!r} expects {input_chans} input channels but the dataset has {in_chans}")
        return model, ModelArgs(name, num_classes, kw, in_chans, input_chans)
    raise ValueError(f"model {name!r} rejected its options {kwargs}: {error}") from error


def start_from_run(model: nn.Module, margs: ModelArgs, source: str,
                   report: Optional[Callable[[str], None]] = None) -> nn.Module:
    """``model`` (built from ``margs``) started from the weights of ``source``: a trained run (a
    run folder, whose ``best.pt`` or else ``last.pt`` is read, or a checkpoint file), or a plain
    state-dict file (torchvision's or timm's ResNet weights; the authors' released PEDConv-ResNet,
    converted by :func:`~pedconv.models.authors.load_authors_checkpoint`).

    The same architecture loads the weights as they are. Otherwise, if ``source`` holds the
    static network that ``margs.name``'s builder converts, the model is rebuilt from those
    weights (``static_weights``), every converted layer keeping its conv's function. Otherwise
    ``source`` is a classifier whose network is the model's backbone (a detector's or a
    segmenter's): :func:`match_backbone` places it, and one line reports what was loaded
    (through ``report``, a training run's log; default: the main process's stderr).

    Raises:
        FileNotFoundError, CheckpointError: no readable checkpoint at ``source``;
        ValueError: the weights fit neither the model nor its static architecture.
    """
    weights = _read_weights(source)
    own = model.state_dict()
    if own.keys() == weights.keys() and all(own[k].shape == v.shape for k, v in weights.items()):
        model.load_state_dict(weights)
        return model
    try:
        return create_model(margs.name, num_classes=margs.num_classes, static_weights=weights, **margs.kwargs)
    except TypeError as e:
        if "static_weights" not in str(e):
            raise
    except ValueError as e:
        raise ValueError(f"--init-from {source}: {e}") from None
    # Not a converting builder (builders refuse keywords they cannot use: check_builder_options):
    # a task model (detector, segmenter) around the run's network, which loads it as the backbone.
    mapping = match_backbone(own, weights)
    if not mapping:
        raise ValueError(f"--init-from {source}: none of its weight tensors fit {margs.name}, neither as the same "
                         "network, nor as the static network it converts, nor as its backbone")
    model.load_state_dict({target: weights[key] for target, key in mapping.items()}, strict=False)
    skipped = sorted(set(weights) - set(mapping.values()))
    (report or _report)(f"--init-from {source}: {len(mapping)} of {len(weights)} tensors loaded into {margs.name}'s "
                        "backbone" + (f"; not loaded: {_abbreviate(skipped)}" if skipped else ""))
    return model


def _read_weights(source: str) -> dict[str, torch.Tensor]:
    """The model weights of a run, a training checkpoint or a state-dict file."""
    from ..models.authors import AUTHORS_ARCHS, is_authors_state_dict, load_authors_checkpoint, read_state_dict
    from .checkpoint import CHECKPOINT_FORMAT, load_training_checkpoint

    path = Path(source)
    if path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), path / "last.pt")
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {source}: no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign: the checkpoint reader names the problem
        return load_training_checkpoint(path)["model"]
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return load_training_checkpoint(path)["model"]
    try:
        weights = read_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"--init-from {source}: neither a pedconv training checkpoint nor a state dict "
                         f"({e})") from None
    if is_authors_state_dict(weights):
        arch = AUTHORS_ARCHS[1] if any(k.endswith("conv3.weight") for k in weights) else AUTHORS_ARCHS[0]
        weights = load_authors_checkpoint(weights, arch, int(weights["fc.weight"].shape[0])).state_dict()
    return weights


_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
"""torchvision's ResNet children in order: backbones built as ``nn.Sequential(*resnet.children())``
(SSD's) name them by position."""


def match_backbone(own: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Where a classification network's tensors go in a task model that holds it as a backbone:
    ``{task model key: checkpoint key}``.

    Each checkpoint key is looked up under one common prefix (``encoder.`` for smp's segmenters,
    ``backbone.body.`` for torchvision's detectors), as it is or with its first component
    renamed by its position among the ResNet children (``layer1`` -> ``4``: SSD's sequential
    body); the prefix matching most floating-point tensors of the same shape wins. The classifier
    head and integer counters are never matched. Static convolutions load into PEDConv ones as
    their base weight (``weight``); the components keep their initial ones, so the start is
    function-preserving.

    >>> own = {"encoder.conv1.weight": torch.zeros(2, 3), "encoder.layer1.0.conv1.weight": torch.zeros(2, 2)}
    >>> match_backbone(own, {"conv1.weight": torch.ones(2, 3), "layer1.0.conv1.weight": torch.ones(2, 2),
    ...                      "fc.weight": torch.ones(5, 2)})
    {'encoder.conv1.weight': 'conv1.weight', 'encoder.layer1.0.conv1.weight': 'layer1.0.conv1.weight'}
    """
    def spellings(key: str) -> list[str]:
        first, _, rest = key.partition(".")
        if first in _RESNET_CHILDREN and rest:
            return [key, f"{_RESNET_CHILDREN.index(first)}.{rest}"]
        return [key]

    candidates: dict[str, dict[str, str]] = {}  # prefix -> {target: source}
    for key, value in weights.items():
        if key.startswith("fc.") or not value.is_floating_point():
            continue  # the head; and step counters, which match any counter
        for spelled in spellings(key):
            for target, mine in own.items():
                if (target == spelled or target.endswith("." + spelled)) and mine.shape == value.shape:
                    candidates.setdefault(target[: len(target) - len(spelled)], {})[target] = key
    if not candidates:
        return {}
    return max(candidates.values(), key=len)


def _abbreviate(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _report(line: str) -> None:
    """One line on the main process's stderr."""
    import sys

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(line, file=sys.stderr, flush=True)
