"""KernelWarehouse: the written-out equation per sample, warehouse sharing, tau schedule,
model builds and argument errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pedconv.baselines import KernelWarehouse, KWConv2d, kw_temperature
from pedconv.baselines.temperature import anneal_attention_temperatures


def _alpha(layer, x):
    """alpha_ij = (1 - tau) z_ij / sum_p |z_ip| + tau beta_ij over the n cells and the zero cell,
    z from GAP -> FC -> BN -> ReLU -> FC; the zero cell's column is then dropped."""
    fc1, bn, _, fc2 = layer.attention
    h = F.relu(bn(F.linear(x.mean((2, 3)), fc1.weight)))
    z = F.linear(h, fc2.weight, fc2.bias).view(x.shape[0], layer.num_cells, layer.warehouse.num_cells + 1)
    z = z / (z.abs().sum(2, keepdim=True) + 1e-3)
    return ((1 - layer.temperature) * z + layer.temperature * layer.beta)[:, :, :-1]


def _reference(layer, x):
    """Cell (p, q, tap) of sample s is sum_j alpha[s, cell, j] E_j, placed at output block p, input
    block q and (for 1x1 cells) kernel tap (u, v); one F.conv2d per sample."""
    wh = layer.warehouse
    co, ci, ch, cw = wh.cell_shape
    a, b, th, tw = layer.blocks
    alpha = _alpha(layer, x)
    outs = []
    for s in range(x.shape[0]):
        w = torch.zeros(layer.out_channels, layer.in_channels, *layer.kernel_size, dtype=x.dtype)
        index = 0
        for p in range(a):
            for q in range(b):
                for u in range(th):
                    for v in range(tw):
                        cell = sum(alpha[s, index, j] * wh.cells[j] for j in range(wh.num_cells))
                        w[p * co:(p + 1) * co, q * ci:(q + 1) * ci, u * ch:(u + 1) * ch, v * cw:(v + 1) * cw] = cell
                        index += 1
        outs.append(F.conv2d(x[s:s + 1], w, layer.bias, layer.stride, layer.padding))
    return torch.cat(outs)


@pytest.mark.parametrize(
    "k,cell_k,stride,tau",
    [(3, 3, 1, 0.3), (3, 3, 2, 0.0), (1, 1, 1, 1.0), (1, 1, 2, 0.7), (3, 1, 1, 0.4), (3, 1, 2, 0.0)],
)
def test_kw_matches_its_equation_per_sample_forward_and_gradients(k, cell_k, stride, tau):
    torch.manual_seed(0)
    wh = KernelWarehouse(7, 4, 4, cell_k).double()
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
    assert anneal_attention_temperatures(nn.Sequential(wh, layer), 5.0, 10.0) == 0.5 and layer.temperature == 0.5


def test_kw_bad_arguments():
    wh = KernelWarehouse(4, 4, 4, 3)
    with pytest.raises(ValueError, match="does not tile"):
        KWConv2d(6, 8, 3, warehouse=wh)
    with pytest.raises(ValueError, match="does not tile"):
        KWConv2d(8, 8, 5, warehouse=wh)
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
    # KW 1x with the spatial partition: one warehouse per stage, shared by the 3x3 convs and the
    # 1x1 downsample conv, holding exactly the stage's kernel weights
    model = create_model("kw_resnet18")
    assert sorted(model.kw_warehouses) == ["s0", "s1", "s2", "s3"]
    assert model.layer2[0].downsample[0].warehouse is model.layer2[0].conv1.warehouse
    stage = [m for m in model.layer2.modules() if isinstance(m, KWConv2d)]
    weights = sum(m.out_channels * m.in_channels * 9 for m in stage) - 128 * 64 * 8  # the 1x1 has 1 tap
    assert model.kw_warehouses["s1"].cells.numel() == weights
    per_size = create_model("kw_resnet18", spatial=False)
    assert sorted(per_size.kw_warehouses) == [f"s{i}_k{k}" for i in range(4) for k in (1, 3) if (i, k) != (0, 1)]
    with pytest.raises(ValueError, match="cell_ratio"):
        create_model("kw_cifar_resnet20", cell_ratio=0.0)


def test_registered_sk_model_builds_with_the_paper_params():
    from pedconv.models import create_model

    model = create_model("skresnext50_32x4d")
    assert abs(sum(p.numel() for p in model.parameters()) / 27.5e6 - 1) < 0.02
    assert create_model("skresnet18", num_classes=10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
