"""SK (Selective Kernel, Li et al., CVPR 2019) as pedconv registers it (timm's module), against its
written-out equation per sample in float64, forward and gradients."""

import torch
import torch.nn.functional as F
from timm.layers import SelectiveKernel

import pedconv


def _sk_reference(sk: SelectiveKernel, x: torch.Tensor) -> torch.Tensor:
    """U_i = ReLU(BN_i(conv_i(x_i))) on the i-th half of the input channels; s = GAP(sum_i U_i);
    z = ReLU(BN(W_r s)); a = softmax over paths of W_s z (per output channel); V = sum_i a_i U_i."""
    outs = []
    halves = x.chunk(sk.num_paths, dim=1)
    for b in range(x.shape[0]):
        us = []
        for path, xi in zip(sk.paths, halves):
            conv, bn = path.conv, path.bn
            y = F.conv2d(xi[b:b + 1], conv.weight, None, conv.stride, conv.padding, conv.dilation)
            y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            us.append(torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])[0])
        s = sum(us).mean(dim=(1, 2))
        attn = sk.attn
        z = attn.fc_reduce.weight[:, :, 0, 0] @ s
        z = (z - attn.bn.running_mean) / torch.sqrt(attn.bn.running_var + attn.bn.eps) * attn.bn.weight + attn.bn.bias
        a = torch.softmax((attn.fc_select.weight[:, :, 0, 0] @ torch.relu(z)).view(sk.num_paths, -1), dim=0)
        outs.append(sum(a[i][:, None, None] * us[i] for i in range(sk.num_paths)))
    return torch.stack(outs)


def test_sk_cifar_resnet20_blocks_match_the_sk_equation_per_sample():
    torch.manual_seed(0)
    model = pedconv.create_model("sk_cifar_resnet20", num_classes=10, in_chans=1, width=8).double()
    for m in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model.eval()
    sks = [m for m in model.modules() if isinstance(m, SelectiveKernel)]
    assert len(sks) == 9  # every block's first conv
    for sk, cin, size in ((model.layer1[0].conv1, 8, 9), (model.layer2[0].conv1, 8, 10)):
        x = torch.randn(3, cin, size, size, dtype=torch.float64, requires_grad=True)
        y, ref = sk(x), _sk_reference(sk, x)
        torch.testing.assert_close(y, ref)
        g = torch.randn_like(y)
        params = [p for p in sk.parameters()]
        got = torch.autograd.grad(y, [x, *params], g)
        want = torch.autograd.grad(ref, [x, *params], g, allow_unused=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)
    assert model(torch.randn(2, 1, 28, 28, dtype=torch.float64)).shape == (2, 10)
