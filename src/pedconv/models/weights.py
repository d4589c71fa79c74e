"""Released weights, described the way torchvision's ``Weights`` describe theirs: where the file
comes from, what it is, what it scored, and how to load it.

The authors released one ImageNet-trained network: PEDConv-ResNet-18 (74.1% top-1 by their
README; Table 1b of the paper reports 74.2% for the model of the paper's recipe). It is
:attr:`PEDConvResNet18_Weights.AUTHORS_IMAGENET`. No other PEDConv network (ResNet-50 included)
was released; the paper's numbers for those stay in :data:`pedconv.models.paper.PAPER_NUMBERS`.

The file sits on Google Drive, which serves it behind a confirmation page, so pedconv never
downloads it: put it in the cache folder (:func:`weights_dir`: ``$PEDCONV_WEIGHTS`` or
``<torch hub dir>/pedconv``) or pass its path. A missing file raises with both places.

Example:
    >>> from pedconv.models.weights import PEDConvResNet18_Weights
    >>> w = PEDConvResNet18_Weights.AUTHORS_IMAGENET
    >>> w.meta["top1"], w.meta["paper_top1"], w.meta["params"], w.meta["macs"]
    (74.1, 74.2, 11900000.0, 1830000000.0)
    >>> w.filename, w.num_classes
    ('pedconv_resnet18_authors_imagenet.pth.tar', 1000)
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch.nn as nn

from ._registry import create_model, set_weights_loader
from .authors import load_authors_checkpoint, read_state_dict
from .paper import PAPER_NUMBERS as PAPER

__all__ = ["PEDConvResNet18_Weights", "Weights", "WeightsEnum", "get_weights", "weights_dir"]


def weights_dir() -> Path:
    """The cache folder of released weights: ``$PEDCONV_WEIGHTS``, else ``<torch.hub.get_dir()>/pedconv``.

    >>> import os
    >>> os.environ["PEDCONV_WEIGHTS"] = "/data/weights"; str(weights_dir())
    '/data/weights'
    >>> del os.environ["PEDCONV_WEIGHTS"]
    """
    if os.environ.get("PEDCONV_WEIGHTS"):
        return Path(os.environ["PEDCONV_WEIGHTS"])
    import torch.hub

    return Path(torch.hub.get_dir()) / "pedconv"


@dataclass(frozen=True)
class Weights:
    """One released file of weights and what it is.

    Attributes:
        model: the registered model it fits (``create_model(model, weights=...)``).
        url: where it is published (the authors' link).
        filename: its name in the cache folder.
        sha256: the file's SHA-256 when known; ``None``: not recorded (the file could not be
            fetched where this was written), then the load checks the tensors' names and shapes only.
        layout: ``"authors"`` (read by :func:`pedconv.load_authors_checkpoint`) or ``"pedconv"``.
        num_classes: the classifier it was trained with.
        meta: published numbers and the recipe: ``top1`` (the release's), ``paper_top1``,
            ``params``/``macs``/``source`` (the paper's row, from :data:`pedconv.models.paper.PAPER_NUMBERS`),
            ``dataset``, ``recipe``.
    """

    model: str
    url: str
    filename: str
    sha256: Optional[str]
    layout: str
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def path(self, cache_dir: Union[str, os.PathLike, None] = None) -> Path:
        """The file in ``cache_dir`` (default :func:`weights_dir`), checked.

        Raises:
            FileNotFoundError: it is not there; the message says where to download it and where to put it.
            ValueError: its SHA-256 is not the published one.
        """
        path = Path(cache_dir) if cache_dir is not None else weights_dir()
        path = path / self.filename
        if not path.is_file():
            raise FileNotFoundError(
                f"weights {self.model} ({self.filename}) are not in {path.parent}: download them from {self.url} "
                f"and save the file as {path} (or set PEDCONV_WEIGHTS to its folder, or pass weights='path/to/file')")
        self.check(path)
        return path

    def check(self, path: Union[str, os.PathLike]) -> None:
        """Refuse a file whose SHA-256 is not the published one (when one is recorded)."""
        if self.sha256 is None:
            return
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest != self.sha256:
            raise ValueError(f"weights file {path}: SHA-256 {digest[:12]}..., expected {self.sha256[:12]}... "
                             f"(a partial download or another file: fetch {self.url} again)")

    def load(self, source: Union[str, os.PathLike, None] = None, num_classes: Optional[int] = None,
             **kwargs: Any) -> nn.Module:
        """The model with these weights, from ``source`` (a file) or the cache folder; with another
        ``num_classes`` its classifier is replaced by a fresh one (fine-tuning, as timm does)."""
        path = Path(source) if source is not None else self.path()
        if source is not None:
            if not path.is_file():
                raise FileNotFoundError(f"weights file {path} does not exist")
            self.check(path)
        if self.layout == "authors":
            if kwargs:
                raise ValueError(f"{self.model} weights in the authors' layout: builder options {sorted(kwargs)} do "
                                 "not apply (the authors' configuration is fixed)")
            model = load_authors_checkpoint(path, self.model.removeprefix("pedconv_"), num_classes=self.num_classes)
        else:
            model = create_model(self.model, num_classes=self.num_classes, **kwargs)
            model.load_state_dict(read_state_dict(path))
        if num_classes is not None and num_classes != self.num_classes:
            _reset_classifier(model, num_classes)
        return model


def _reset_classifier(model: nn.Module, num_classes: int) -> None:
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__}: no 'fc' classifier to replace for num_classes={num_classes}")
    model.fc = nn.Linear(head.in_features, num_classes, device=head.weight.device, dtype=head.weight.dtype)


class WeightsEnum(enum.Enum):
    """Base of the per-model enums of released weights (``PEDConvResNet18_Weights.AUTHORS_IMAGENET``)."""

    @property
    def weights(self) -> Weights:
        """The :class:`Weights` this member stands for."""
        value = self.value
        assert isinstance(value, Weights)
        return value

    def __getattr__(self, name: str) -> Any:  # w.meta, w.url, w.load(...), as torchvision's members
        if name.startswith("_") or name in ("value", "name"):
            raise AttributeError(name)
        return getattr(self.value, name)


_AUTHORS_RESNET18_RECIPE = (
    "the authors' README command: 8 GPUs, batch 64 per GPU (512), SGD momentum 0.875, lr 0.512, 8 warm-up "
    "epochs then cosine, 250 epochs, weight decay 3.0517578125e-05, label smoothing 0.1, mixup 0.2, "
    "fan-in init, 224 px")


class PEDConvResNet18_Weights(WeightsEnum):
    """Released weights of ``pedconv_resnet18``."""

    AUTHORS_IMAGENET = Weights(
        model="pedconv_resnet18",
        url="https://drive.google.com/file/d/1943hDMg1MBZWeA4bEJAnPWRoEtAtgGXh/view?usp=sharing",
        filename="pedconv_resnet18_authors_imagenet.pth.tar",
        sha256=None,
        layout="authors",
        num_classes=1000,
        meta={"top1": 74.1, "paper_top1": PAPER["pedconv_resnet18"]["top1"],
              "params": PAPER["pedconv_resnet18"]["params"], "macs": PAPER["pedconv_resnet18"]["macs"],
              "source": PAPER["pedconv_resnet18"]["source"], "dataset": "ImageNet-1k",
              "input_size": (3, 224, 224), "recipe": _AUTHORS_RESNET18_RECIPE,
              "published_by": "github.com/zejiangh/PEDConv (README, Checkpoints)"},
    )
    DEFAULT = AUTHORS_IMAGENET


_BY_MODEL: dict[str, type[WeightsEnum]] = {"pedconv_resnet18": PEDConvResNet18_Weights}


def get_weights(model: str, weights: Union[str, WeightsEnum, Weights, os.PathLike]) -> tuple[Weights, Optional[Path]]:
    """``create_model``'s ``weights=``: a member (or its name, ``"DEFAULT"``, ``"AUTHORS_IMAGENET"``,
    ``"PEDConvResNet18_Weights.AUTHORS_IMAGENET"``) of ``model``'s enum, or a path to a file of it.
    Returns the weights and the file given (``None``: the cache folder's).

    >>> get_weights("pedconv_resnet18", "DEFAULT")[0] is PEDConvResNet18_Weights.AUTHORS_IMAGENET.value
    True
    >>> get_weights("pedconv_resnet50", "DEFAULT")
    Traceback (most recent call last):
    ...
    ValueError: weights='DEFAULT': no released weights for pedconv_resnet50 (released: pedconv_resnet18)
    """
    enum_type = _BY_MODEL.get(model)
    if isinstance(weights, WeightsEnum):
        weights = weights.weights
    if isinstance(weights, Weights):
        if weights.model != model:
            raise ValueError(f"weights for {weights.model} do not fit {model}")
        return weights, None
    text = os.fspath(weights)
    if enum_type is None:
        if Path(text).is_file():
            raise ValueError(f"weights={text!r}: {model} has no released weights to read a file as; load a state "
                             f"dict with model.load_state_dict instead")
        released = ", ".join(sorted(_BY_MODEL))
        raise ValueError(f"weights={text!r}: no released weights for {model} (released: {released})")
    member = text.rpartition(".")[2] if text.startswith(enum_type.__name__ + ".") else text
    if member in enum_type.__members__:
        return enum_type[member].weights, None
    if Path(text).is_file():
        return enum_type["DEFAULT"].weights, Path(text)
    raise ValueError(f"weights={text!r}: neither a file nor one of {enum_type.__name__}'s "
                     f"{', '.join(enum_type.__members__)}")


def _load_released(name: str, weights: Any, num_classes: Optional[int], kwargs: dict[str, Any]) -> nn.Module:
    released, path = get_weights(name, weights)
    return released.load(path, num_classes=num_classes, **kwargs)


set_weights_loader(_load_released)
