"""Build a registered model for a dataset: classes, input channels, and what was actually passed.

Models that take ``in_chans`` (the CIFAR-style ResNets, timm networks) get the dataset's
channel count; torchvision-based ones do not, and a 1-channel dataset is then replicated to
3 channels on the device (:class:`~pedconv.training.data.BatchPreprocessor`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn as nn

from ..baselines.dyconv import DyConv2d, dyconv_temperature
from ..baselines.kernelwarehouse import KWConv2d, kw_temperature
from ..models import create_model, model_entrypoint

__all__ = ["ModelArgs", "build_model", "dynamic_temperature_modules", "set_dyconv_temperature", "start_from_run"]


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


def start_from_run(model: nn.Module, margs: ModelArgs, source: str) -> nn.Module:
    """``model`` (built from ``margs``) started from the weights of the trained run ``source``
    (a run folder, whose ``best.pt`` or else ``last.pt`` is read, or a checkpoint file).

    The same architecture loads the weights as they are. Otherwise ``source`` must hold the
    static network that ``margs.name``'s builder converts: the model is rebuilt from those
    weights (``static_weights``), every converted layer keeping its conv's function.

    Raises:
        FileNotFoundError, CheckpointError: no readable checkpoint at ``source``;
        ValueError: the weights fit neither the model nor its static architecture.
    """
    from .checkpoint import load_training_checkpoint

    path = Path(source)
    if path.is_dir():
        path = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), path / "last.pt")
    weights = load_training_checkpoint(path)["model"]
    own = model.state_dict()
    if own.keys() == weights.keys() and all(own[k].shape == v.shape for k, v in weights.items()):
        model.load_state_dict(weights)
        return model
    try:
        started = create_model(margs.name, num_classes=margs.num_classes, static_weights=weights, **margs.kwargs)
    except TypeError as e:
        if "static_weights" not in str(e):
            raise
        raise ValueError(f"--init-from {source}: its weights do not fit {margs.name}, and {margs.name} is not a "
                         "converting builder that can start from a static network") from None
    except ValueError as e:
        raise ValueError(f"--init-from {source}: {e}") from None
    found, total = _tensors_found(started, weights)
    if found == 0:
        # Builders that pass their options on to torchvision's detectors or smp's models lose an
        # unknown keyword there without a word: a start that reaches nothing must not pass.
        raise ValueError(f"--init-from {source}: none of its {total} weight tensors reached {margs.name} (its "
                         "builder ignored them); the run's network does not fit this model")
    return started


_STATISTICS = ("running_mean", "running_var")  # zeros and ones in every fresh model: they prove nothing


def _tensors_found(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """How many of the checkpoint's floating-point tensors (of more than one element; not
    normalisation statistics) the model holds, by shape and value, and how many there are."""
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for name, t in model.state_dict().items():
        if not name.endswith(_STATISTICS):
            by_shape.setdefault(tuple(t.shape), []).append(t)
    checked = [v for k, v in weights.items() if v.is_floating_point() and v.numel() > 1 and not k.endswith(_STATISTICS)]
    found = sum(any(torch.equal(v, t) for t in by_shape.get(tuple(v.shape), ())) for v in checked)
    return found, len(checked)


def dynamic_temperature_modules(model: nn.Module) -> Iterator[Union[DyConv2d, KWConv2d]]:
    """The DY-Conv and KernelWarehouse layers (their attention has an annealed ``temperature``)."""
    return (m for m in model.modules() if isinstance(m, (DyConv2d, KWConv2d)) and hasattr(m, "temperature"))


def set_dyconv_temperature(model: nn.Module, epoch: float, anneal_epochs: float) -> float:
    """Set every DY-Conv layer's temperature (30 -> 1) and every KernelWarehouse layer's
    ``tau`` (1 -> 0, :func:`kw_temperature`) for fractional ``epoch``, both annealed over
    ``anneal_epochs``; returns the value set (KW's when the model has KW layers).

    >>> import torch
    >>> set_dyconv_temperature(torch.nn.Linear(1, 1), 5.0, 10.0)
    15.5
    """
    t = dyconv_temperature(epoch, anneal_epochs=anneal_epochs)
    tau = kw_temperature(epoch, anneal_epochs=anneal_epochs)
    has_kw = False
    for m in dynamic_temperature_modules(model):
        has_kw = has_kw or isinstance(m, KWConv2d)
        m.temperature = tau if isinstance(m, KWConv2d) else t
    return tau if has_kw else t
