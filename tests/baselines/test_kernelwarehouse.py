"""KernelWarehouse: the written-out equation per sample, warehouse sharing, tau schedule,
model builds and argument errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pedconv.baselines import KernelWarehouse, KWConv2d, kw_temperature
from pedconv.training.model import set_dyconv_temperature


def _alpha(layer, x):
    """alpha_ij = (1 - tau) z_ij / sum_p |z_ip| + tau beta_ij, z from GAP -> FC -> BN -> ReLU -> FC."""
    fc1, bn, _, fc2 = layer.attention
    h = F.relu(bn(F.linear(x.mean((2, 3)), fc1.weight)))
    z = F.linear(h, fc2.weight, fc2.bias).view(x.shape[0], layer.num_cells, -1)
    z = z / (z.abs().sum(2, keepdim=True) + 1e-3)
    return (1 - layer.temperature) * z + layer.temperature * layer.beta


def _reference(layer, x):
    wh = layer.warehouse
    co, ci = wh.cell_shape[:2]
    a, b = layer.blocks
    alpha = _alpha(layer, x)
    outs = []
    for s in range(x.shape[0]):
        w = torch.zeros(layer.out_channels, layer.in_channels, *layer.kernel_size, dtype=x.dtype)
        for p in range(a):
            for q in range(b):
                cell = sum(alpha[s, p * b + q, j] * wh.cells[j] for j in range(wh.num_cells))
                w[p * co : (p + 1) * co, q * ci : (q + 1) * ci] = cell
        outs.append(F.conv2d(x[s : s + 1], w, layer.bias, layer.stride, layer.padding))
    return torch.cat(outs)


@pytest.mark.parametrize("k,stride,tau", [(3, 1, 0.3), (3, 2, 0.0), (1, 1, 1.0), (1, 2, 0.7)])
def test_kw_matches_its_equation_per_sample_forward_and_gradients(k, stride, tau):
    torch.manual_seed(0)
    wh = KernelWarehouse(7, 4, 4, k).double()
    layers = [KWConv2d(8, 8, k, stride=stride, padding=k // 2, warehouse=wh, temperature=tau).double(),
              KWConv2d(8, 12, k, stride=1, padding=0, warehouse=wh, temperature=tau, bias=True).double()]
    x = torch.randn(3, 8, 9, 9, dtype=torch.double)
    for layer in layers:
        layer.train()
        y, ref = layer(x), _reference(layer, x)
        torch.testing.assert_close(y, ref)
        g = torch.randn_like(y)
        params = [wh.cells, *layer.attention.parameters()]
        got = torch.autograd.grad((y * g).sum(), params)
        want = torch.autograd.grad((ref * g).sum(), params)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_cells_are_shared_and_registered_once():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.warehouse = KernelWarehouse(6, 4, 4, 3)
            self.a = KWConv2d(8, 8, 3, padding=1, warehouse=self.warehouse)
            self.b = KWConv2d(8, 4, 3, padding=1, warehouse=self.warehouse)

        def forward(self, x):
            return self.b(self.a(x))

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names.count("warehouse.cells") == 1 and not any("cells" in n for n in names if n != "warehouse.cells")
    assert len({id(p) for p in net.parameters()}) == len(names)
    assert net.a.warehouse is net.b.warehouse
    net(torch.randn(2, 8, 5, 5)).sum().backward()
    assert net.warehouse.cells.grad is not None
    # beta at tau = 1: the two layers start from disjoint cells (4 + 2 of the 6)
    assert net.a.beta.argmax(1).tolist() == [0, 1, 2, 3] and net.b.beta.argmax(1).tolist() == [4, 5]
    state = net.state_dict()
    assert "warehouse.cells" in state and not any(k.startswith("a.") and "cells" in k for k in state)


def test_temperature_schedule_and_training_hook():
    assert kw_temperature(0.0, 20.0) == 1.0 and kw_temperature(5.0, 20.0) == 0.75
    assert kw_temperature(25.0, 20.0) == 0.0 and kw_temperature(-1.0, 20.0) == 1.0
    wh = KernelWarehouse(4, 4, 4, 3)
    layer = KWConv2d(8, 8, 3, warehouse=wh)
    assert set_dyconv_temperature(nn.Sequential(wh, layer), 5.0, 10.0) == 0.5 and layer.temperature == 0.5


def test_kw_bad_arguments():
    wh = KernelWarehouse(4, 4, 4, 3)
    with pytest.raises(ValueError, match="does not tile"):
        KWConv2d(6, 8, 3, warehouse=wh)
    with pytest.raises(ValueError, match="does not tile"):
        KWConv2d(8, 8, 1, warehouse=wh)
    with pytest.raises(ValueError, match="groups=1"):
        KWConv2d(8, 8, 3, groups=2, warehouse=wh)
    with pytest.raises(ValueError, match="temperature"):
        KWConv2d(8, 8, 3, warehouse=wh, temperature=2.0)
    with pytest.raises(ValueError, match="warehouse must be"):
        KWConv2d(8, 8, 3, warehouse=nn.Linear(1, 1))
    with pytest.raises(ValueError, match="num_cells"):
        KernelWarehouse(0, 4, 4, 3)


def test_registered_kw_models_build_and_train_step():
    from pedconv.models import create_model

    for name, x in (("kw_resnet18", torch.randn(2, 3, 64, 64)), ("kw_cifar_resnet20", torch.randn(2, 3, 32, 32))):
        model = create_model(name)
        model(x).sum().backward()
        cells = [n for n, _ in model.named_parameters() if n.endswith("cells")]
        assert cells and all(n.startswith("kw_warehouses.") for n in cells)
        assert any(isinstance(m, KWConv2d) for m in model.modules())
    with pytest.raises(ValueError, match="cell_ratio"):
        create_model("kw_cifar_resnet20", cell_ratio=0.0)


def test_registered_sk_model_builds_with_the_paper_params():
    from pedconv.models import create_model

    model = create_model("skresnext50_32x4d")
    assert abs(sum(p.numel() for p in model.parameters()) / 27.5e6 - 1) < 0.02
    assert create_model("skresnet18", num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
