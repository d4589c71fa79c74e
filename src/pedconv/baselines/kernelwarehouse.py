"""KernelWarehouse baseline: "KernelWarehouse: Rethinking the Design of Dynamic
Convolution", Li & Yao, ICML 2024 (https://arxiv.org/abs/2308.08361).

A layer's ``Cout x Cin x k x k`` kernel is cut into ``m`` disjoint cells of one shape,
``(co, ci, 1, 1)`` (KW's default "spatial partition": every tap its own cell, so layers of
every kernel size in a stage share one warehouse) or ``(co, ci, k, k)``; a
:class:`KernelWarehouse` of ``n`` cells of that shape is shared by several layers, and cell
``i`` of a layer is ``sum_j alpha_ij(x) E_j`` over the warehouse cells ``E_j``. The attention
branch is ``GAP -> FC -> BN -> ReLU -> FC`` giving ``z`` of shape ``(m, n + 1)`` (the last
column is KW's zero cell, which takes part in the normalisation and then contributes nothing)
and the paper's normalisation (its Eq. for alpha)::

    alpha_ij = (1 - tau) * z_ij / sum_p |z_ip| + tau * beta_ij

with ``beta_ij`` = 1 for one assigned warehouse cell per layer cell (cells are assigned in
order, layer after layer, so at ``tau = 1`` every layer starts from its own disjoint cells)
and ``tau`` annealed linearly from 1 to 0 (:func:`kw_temperature`). Executed as DY-Conv:
assemble the kernel per sample, then a batch-as-groups convolution.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..execution.geometry import batch_as_groups_conv
from .base import BaselineConv2d

__all__ = ["KWConv2d", "KernelWarehouse", "convert_to_kernelwarehouse", "kw_temperature"]


def kw_temperature(epoch: float, anneal_epochs: float = 20.0) -> float:
    """KernelWarehouse's ``tau``: 1 at epoch 0, linearly down to 0 at ``anneal_epochs``.

    >>> kw_temperature(0.0), kw_temperature(10.0), kw_temperature(30.0)
    (1.0, 0.5, 0.0)
    """
    if epoch >= anneal_epochs:
        return 0.0
    return 1.0 - max(epoch, 0.0) / anneal_epochs


class KernelWarehouse(nn.Module):
    """``num_cells`` kernel cells of shape ``(cell_out, cell_in, kh, kw)`` shared by layers.

    Build it, then pass it to every :class:`KWConv2d` that draws from it; the warehouse
    must be a submodule of the model exactly once (e.g. ``model.warehouses``) so its
    parameter is registered once (``KWConv2d`` keeps only a non-module reference).
    ``next_cell`` hands out the initial assignment ``beta``.

    Example:
        >>> KernelWarehouse(6, 4, 4, 3).cells.shape
        torch.Size([6, 4, 4, 3, 3])
    """

    def __init__(
        self, num_cells: int, cell_out: int, cell_in: int, kernel_size: int,
        device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        for name, v in (("num_cells", num_cells), ("cell_out", cell_out), ("cell_in", cell_in),
                        ("kernel_size", kernel_size)):
            if v < 1:
                raise ValueError(f"KernelWarehouse: {name} must be >= 1, got {v}")
        self.cell_shape = (cell_out, cell_in, kernel_size, kernel_size)
        self.cells = nn.Parameter(torch.empty(num_cells, *self.cell_shape, device=device, dtype=dtype))
        self.next_cell = 0
        for j in range(num_cells):
            nn.init.kaiming_normal_(self.cells.data[j], mode="fan_out", nonlinearity="relu")

    @property
    def num_cells(self) -> int:
        """n, the number of cells."""
        return self.cells.shape[0]

    def assign(self, count: int) -> list[int]:
        """The next ``count`` cells (cyclically) for a new layer's ``beta``."""
        out = [(self.next_cell + i) % self.num_cells for i in range(count)]
        self.next_cell = (self.next_cell + count) % self.num_cells
        return out

    def extra_repr(self) -> str:
        return f"num_cells={self.num_cells}, cell_shape={self.cell_shape}"


class KWConv2d(BaselineConv2d):
    """Conv whose kernel cells are attention mixtures of a shared warehouse's cells.

    ``in_channels``, ``out_channels``, ``kernel_size``, ``stride``, ``padding``, ``dilation``,
    ``groups``, ``bias``: as in :class:`torch.nn.Conv2d` (integer padding, ``groups=1``).

    Args:
        warehouse: the shared :class:`KernelWarehouse`; its cells must tile the kernel (1x1
            cells tile any kernel tap by tap).
        reduction: attention hidden size ``max(int(Cin * reduction), 16)`` (1/16 in the paper).
        temperature: initial ``tau`` (1).

    Example:
        >>> import torch
        >>> wh = KernelWarehouse(8, 4, 4, 3)
        >>> a, b = KWConv2d(8, 8, 3, padding=1, warehouse=wh), KWConv2d(8, 4, 3, warehouse=wh)
        >>> b(a(torch.randn(2, 8, 6, 6))).shape
        torch.Size([2, 4, 4, 4])
    """

    def __init__(
        self, *args: Any, warehouse: KernelWarehouse, reduction: float = 1 / 16, temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(warehouse, KernelWarehouse):
            raise ValueError(f"warehouse must be a KernelWarehouse, got {type(warehouse).__name__}")
        co, ci, kh, kw = warehouse.cell_shape
        if self.groups != 1:
            raise ValueError(f"KWConv2d supports groups=1 only, got groups={self.groups}")
        if (self.kernel_size != (kh, kw) and (kh, kw) != (1, 1)) or self.out_channels % co or self.in_channels % ci:
            raise ValueError(
                f"warehouse cell shape {warehouse.cell_shape} does not tile the kernel "
                f"({self.out_channels}, {self.in_channels}, {self.kernel_size})"
            )
        if not 0.0 <= temperature <= 1.0:
            raise ValueError(f"temperature must be in [0, 1], got {temperature}")
        dd = self.factory_kwargs
        self._warehouse = [warehouse]  # a list so the shared module is not registered here
        # (output blocks, input blocks, tap rows, tap columns) that the cells tile
        self.blocks = (self.out_channels // co, self.in_channels // ci, self.kernel_size[0] // kh,
                       self.kernel_size[1] // kw)
        self.num_cells = math.prod(self.blocks)
        self.temperature = float(temperature)
        hidden = max(int(self.in_channels * reduction), 16)
        n = warehouse.num_cells
        self.attention = nn.Sequential(
            nn.Linear(self.in_channels, hidden, bias=False, **dd), nn.BatchNorm1d(hidden, **dd),
            nn.ReLU(inplace=True), nn.Linear(hidden, self.num_cells * (n + 1), **dd),
        )
        beta = torch.zeros(self.num_cells, n + 1, **dd)
        beta[torch.arange(self.num_cells), torch.tensor(warehouse.assign(self.num_cells))] = 1.0
        self.beta: Tensor
        self.register_buffer("beta", beta)
        self.bias = nn.Parameter(torch.zeros(self.out_channels, **dd)) if self.use_bias else None

    @property
    def warehouse(self) -> KernelWarehouse:
        """The shared warehouse this layer draws its cells from."""
        return self._warehouse[0]

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, preserve_function: bool = False, **options: Any) -> KWConv2d:
        """A KW layer with ``conv``'s geometry drawing from ``options["warehouse"]`` (fresh weights:
        cells shared between layers cannot start as one conv's weight; ``preserve_function=True``
        is refused).

        >>> import torch.nn as nn
        >>> KWConv2d.from_conv(nn.Conv2d(8, 8, 3), warehouse=KernelWarehouse(4, 4, 4, 3)).num_cells
        4
        """
        if preserve_function:
            raise ValueError("KWConv2d cannot keep a converted conv's function (its warehouse's cells are shared "
                             "between layers); use preserve_function=False")
        if "warehouse" not in options:
            raise TypeError("KWConv2d.from_conv needs warehouse=KernelWarehouse(...)")
        return cls._with_geometry_of(conv, **options)

    def attentions(self, x: Tensor) -> Tensor:
        """alpha, ``(B, m, n)``: the normalised attentions (over the ``n`` cells and the zero
        cell) mixed with ``beta`` by ``tau``, the zero cell's column dropped."""
        z = self.attention(x.mean(dim=(2, 3))).view(x.shape[0], self.num_cells, -1)
        z = z / (z.abs().sum(dim=2, keepdim=True) + 1e-3)  # eps as in the authors' code
        beta: Tensor = self.beta
        return ((1.0 - self.temperature) * z + self.temperature * beta)[:, :, :-1]

    def forward(self, x: Tensor) -> Tensor:
        batch, wh = x.shape[0], self.warehouse
        n, (co, ci, kh, kw) = wh.num_cells, wh.cell_shape
        cells = torch.matmul(self.attentions(x), wh.cells.reshape(n, -1))  # (B, m, co*ci*kh*kw)
        a, b, th, tw = self.blocks
        w = cells.view(batch, a, b, th, tw, co, ci, kh, kw).permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
        w = w.reshape(batch, self.out_channels, self.in_channels, *self.kernel_size)
        y = batch_as_groups_conv(x, w, self.geometry)
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cells={self.num_cells}, warehouse_cells={self.warehouse.num_cells}"




def convert_to_kernelwarehouse(
    model: nn.Module, stages: list[str], *, exclude: tuple[str, ...] = (), cell_ratio: float = 1.0,
    spatial: bool = True, **options: Any,
) -> nn.Module:
    """Swap ``model``'s ``nn.Conv2d`` layers under each name prefix in ``stages`` for
    :class:`KWConv2d` layers, in place: one warehouse per stage with 1x1 cells shared by every
    kernel size (``spatial``, KW's default), or one per (stage, kernel size) with k x k cells.

    A warehouse's cell is ``(gcd of Cout, gcd of Cin)`` over its layers and it holds
    ``cell_ratio`` times the cells its layers have together (``1.0`` is KW's "1x").
    The warehouses live in ``model.kw_warehouses``. ``exclude``: name substrings to keep
    static (e.g. ``"downsample"``); ``options`` go to every :class:`KWConv2d`.

    >>> import torch, torchvision
    >>> net = convert_to_kernelwarehouse(torchvision.models.resnet18(num_classes=10), ["layer1"])
    >>> net(torch.randn(2, 3, 32, 32)).shape, net.kw_warehouses["s0"].num_cells  # 4 convs x 9 taps
    (torch.Size([2, 10]), 36)
    """
    if isinstance(model, nn.Sequential):
        raise ValueError("model must not be an nn.Sequential (it would run model.kw_warehouses as a layer)")
    if cell_ratio <= 0:
        raise ValueError(f"cell_ratio must be > 0, got {cell_ratio}")
    warehouses = nn.ModuleDict()
    for s, prefix in enumerate(stages):
        groups: dict[str, list[tuple[str, nn.Conv2d]]] = {}
        for name, m in model.named_modules():
            if (type(m) is nn.Conv2d and name.startswith(prefix) and m.groups == 1 and len(set(m.kernel_size)) == 1
                    and not any(e in name for e in exclude)):
                groups.setdefault(f"s{s}" if spatial else f"s{s}_k{m.kernel_size[0]}", []).append((name, m))
        for key, convs in groups.items():
            co = math.gcd(*(c.out_channels for _, c in convs))
            ci = math.gcd(*(c.in_channels for _, c in convs))
            k = 1 if spatial else convs[0][1].kernel_size[0]
            taps = [math.prod(c.kernel_size) // (k * k) for _, c in convs]
            total = sum((c.out_channels // co) * (c.in_channels // ci) * t for (_, c), t in zip(convs, taps))
            wh = KernelWarehouse(max(1, round(total * cell_ratio)), co, ci, k,
                                 device=convs[0][1].weight.device, dtype=convs[0][1].weight.dtype)
            warehouses[key] = wh
            for name, conv in convs:
                parent = model.get_submodule(name.rpartition(".")[0])
                setattr(parent, name.rpartition(".")[2], KWConv2d.from_conv(conv, warehouse=wh, **options))
    model.kw_warehouses = warehouses
    return model
