"""load_authors_checkpoint against a small re-statement of the authors' layer."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import pedconv


class AuthorsDynConv(nn.Module):
    """The authors' dynamic conv, restated from the facts in the issue (eval mode)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        cin, cout, k, g = conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.groups
        hidden = cin // 16
        self.stride, self.padding, self.groups, self.k = conv.stride, conv.padding, g, k
        self.weight = nn.Parameter(torch.randn(cout, cin // g, k, k) * 0.1)
        self.attn = nn.Module()
        self.attn.fc_share = nn.Linear(cin, hidden)
        self.attn.fc_inp = nn.Linear(hidden, cin // g)
        self.attn.fc_oup = nn.Linear(hidden, cout)
        self.attn.fc_k = nn.Linear(hidden, k * k)
        self.attn.decoder = nn.Sequential(nn.Linear(cin // g + cout + k * k, hidden), nn.ReLU(), nn.Linear(hidden, cin))

    def forward(self, x):
        h = F.relu(self.attn.fc_share(x.mean((2, 3))))
        phi, gamma, psi = (torch.sigmoid(f(h)) for f in (self.attn.fc_inp, self.attn.fc_oup, self.attn.fc_k))
        b = x.shape[0]
        w = (
            self.weight[None]
            * gamma[:, :, None, None, None]
            * phi[:, None, :, None, None]
            * psi.view(b, 1, 1, self.k, self.k)
        )
        return torch.cat(
            [F.conv2d(x[i : i + 1], w[i], None, self.stride, self.padding, 1, self.groups) for i in range(b)]
        )


def _authors_model(arch, num_classes=10):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    names = pedconv.select_convs(model, keep_shortcut=True)
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, AuthorsDynConv(model.get_submodule(name)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_authors_checkpoint_gives_identical_outputs(tmp_path, arch):
    ref = _authors_model(arch)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 250}, path)
    ours = pedconv.load_authors_checkpoint(path, arch, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    # The decoder was mapped too (column order inp|oup|k -> gamma|phi|psi).
    name = "layer1.0.conv1"
    a, b = ref.get_submodule(name), ours.get_submodule(name)
    h = torch.randn(3, a.attn.fc_share.out_features)
    g_theirs = torch.cat([a.attn.fc_inp(h), a.attn.fc_oup(h), a.attn.fc_k(h)], 1)
    g_ours = b.generator.head(h)
    torch.testing.assert_close(b.decoder(g_ours), a.attn.decoder(g_theirs))


def test_authors_checkpoint_errors(tmp_path):
    ref = _authors_model("resnet18")
    sd = ref.state_dict()
    with pytest.raises(ValueError, match="arch"):
        pedconv.load_authors_checkpoint(sd, "resnet34")
    broken = dict(sd)
    broken.pop("layer2.0.conv1.attn.fc_k.weight")
    with pytest.raises(ValueError, match=r"fc_k\.weight"):
        pedconv.load_authors_checkpoint(broken, "resnet18", num_classes=10)
    with pytest.raises(ValueError, match=r"shape mismatch|lacks"):
        pedconv.load_authors_checkpoint(sd, "resnet18", num_classes=1000)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        pedconv.load_authors_checkpoint(bad, "resnet18")
    with pytest.raises(FileNotFoundError):
        pedconv.load_authors_checkpoint(tmp_path / "none.pth", "resnet18")


def test_init_from_the_authors_file_loads_a_pedconv_task_models_backbone(tmp_path):
    """`--init-from` the authors' released file: converted by load_authors_checkpoint, then placed
    as the backbone of a PEDConv segmenter (the dynamic convs' generators included)."""
    from pedconv.training.model_setup import ModelArgs, start_from_run

    ref = _authors_model("resnet18")
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "authors.pth")
    ours = pedconv.models.authors.load_authors_checkpoint(tmp_path / "authors.pth", "resnet18", 10).state_dict()
    model = start_from_run(pedconv.create_model("pedconv_upernet_resnet18"), ModelArgs("pedconv_upernet_resnet18", 150),
                           str(tmp_path / "authors.pth"))
    state = model.state_dict()
    for key in ("layer2.0.conv1.weight", "layer2.0.conv1.generator.head.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(state[f"encoder.{key}"], ours[key]), key
