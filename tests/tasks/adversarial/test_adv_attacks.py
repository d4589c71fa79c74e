"""PGD, NormalizedModel, parse_eps and robust_accuracy; the attack is checked to be real on a
trained Fashion-MNIST CNN (see conftest.py)."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.parallel import DistributedDataParallel

import pedconv.tasks.adversarial.attacks as attacks
from pedconv.errors import UsageError
from pedconv.tasks.adversarial import PAPER_EPS, NormalizedModel, parse_eps, pgd_attack, robust_accuracy
from pedconv.training.data import TensorImageDataset, collate_batch
from pedconv.training.distributed import DistEnv


# ----------------------------------------------------------------------------- parse_eps
@pytest.mark.parametrize("text, value", [("4/255", 4 / 255), ("0.0157", 0.0157), ("0", 0.0), (" 8 / 255 ", 8 / 255),
                                         ("1", 1.0), ("1e-2", 0.01), ("2/4", 0.5)])
def test_parse_eps_accepts_numbers_and_fractions(text, value):
    assert parse_eps(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text, words", [("-4/255", ">= 0"), ("-0.1", ">= 0"), ("4/0", "zero denominator"),
                                         ("abc", "fraction such as 4/255"), ("4/255/2", "fraction"), ("", "fraction"),
                                         ("nan", "finite"), ("inf", "finite"), ("4", "4/255, not 4")])
def test_parse_eps_refuses_with_one_line_naming_the_option(text, words):
    with pytest.raises(UsageError) as e:
        parse_eps(text, option="--pgd-alpha")
    message = str(e.value)
    assert message.startswith("--pgd-alpha: ") and words in message and "\n" not in message
    assert isinstance(e.value, ValueError)


def test_paper_eps_is_4_of_255():
    assert round(PAPER_EPS * 255, 12) == 4.0


# ----------------------------------------------------------------------------- NormalizedModel
def test_normalized_model_normalises_inside_and_replicates_channels():
    seen = []
    inner = nn.Identity()
    inner.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    net = NormalizedModel(inner, (0.2,), (0.5,), out_chans=3)
    x = torch.rand(2, 1, 4, 4)
    out = net(x)
    torch.testing.assert_close(out, ((x - 0.2) / 0.5).expand(-1, 3, -1, -1))
    assert seen[0].shape == (2, 3, 4, 4)
    assert list(net.state_dict()) == []  # statistics are not checkpointed with the model
    with pytest.raises(ValueError):
        NormalizedModel(inner, (0.2, 0.3), (0.5,))


# ----------------------------------------------------------------------------- PGD mechanics
def _linear(chans: int = 1, size: int = 4, classes: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(chans * size * size, classes))


@settings(max_examples=25, deadline=None)
@given(eps=st.floats(0, 0.5), alpha=st.one_of(st.none(), st.floats(1e-4, 0.5)), steps=st.integers(0, 4),
       random_start=st.booleans(), seed=st.integers(0, 2**31))
def test_pgd_stays_in_the_eps_ball_and_in_the_image_range(eps, alpha, steps, random_start, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 4, 4, generator=g)
    x[0] = 0.0
    x[1] = 1.0  # on the border of [0, 1]: the projection onto the image range matters
    y = torch.randint(0, 3, (5,), generator=g)
    x_adv = pgd_attack(_linear(), x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start, generator=g)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_raises_the_loss_of_a_linear_model_as_the_gradient_says():
    # For a linear model the worst l-inf perturbation of the margin is eps * sign of the weight
    # difference: one full step (alpha = eps) from x must reach it away from the image borders.
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.0, 0.0, 0.0, 0.0]]))
        net[1].bias.copy_(torch.tensor([5.0, 0.0]))  # class 0 stays right: the last iterate is returned
    x = torch.full((1, 1, 2, 2), 0.5)
    x_adv = pgd_attack(net, x, torch.tensor([0]), eps=0.1, alpha=0.1, steps=1, random_start=False)
    torch.testing.assert_close((x_adv - x).flatten(), torch.tensor([-0.1, 0.1, -0.1, 0.1]))


def test_pgd_keeps_the_first_misclassified_iterate():
    # Already misclassified at the start (and with a non-zero input gradient, so a step would
    # move it): the sample is returned as it is, however many steps follow.
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        net[1].bias.copy_(torch.tensor([0.0, 5.0]))
    x = torch.rand(3, 1, 2, 2)
    assert torch.equal(pgd_attack(net, x, torch.tensor([0, 0, 0]), eps=0.1, steps=5, random_start=False), x)


def test_pgd_touches_no_parameter_gradient_and_restores_the_mode():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3)).train()
    stats = net[1].running_mean.clone()
    pgd_attack(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), eps=0.1, steps=2)
    assert all(p.grad is None for p in net.parameters())
    assert net.training and all(m.training for m in net.modules())
    torch.testing.assert_close(net[1].running_mean, stats)  # ran in eval mode: BN statistics untouched


def test_pgd_refuses_a_ddp_wrapper():
    fake_ddp = DistributedDataParallel.__new__(DistributedDataParallel)
    with pytest.raises(ValueError, match="bare module"):
        pgd_attack(fake_ddp, torch.rand(1, 1, 2, 2), torch.tensor([0]), eps=0.1, steps=1)


def test_pgd_works_under_autocast():
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd_attack(_linear(), x, y, eps=0.05, steps=3)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.05 + 1e-6


# ----------------------------------------------------------------------------- the attack is real
def test_pgd_with_eps_zero_changes_nothing(undefended, top1, single_thread):
    t = undefended
    with single_thread():
        x_adv = pgd_attack(t.model, t.x, t.y, eps=0.0, steps=3)
    assert torch.equal(x_adv, t.x)
    assert top1(t.model, x_adv, t.y) == top1(t.model, t.x, t.y)


def test_pgd_accuracy_falls_far_below_natural_and_decreases_with_eps(undefended, top1, single_thread):
    t = undefended
    natural = top1(t.model, t.x, t.y)
    epsilons = (0, 1, 2, 4, 8, 32)
    with single_thread():
        acc = {e: top1(t.model, pgd_attack(t.model, t.x, t.y, eps=e / 255, steps=10,
                                           generator=torch.Generator().manual_seed(0)), t.y) for e in epsilons}
    print(f"\nnatural {natural:.1f}%, PGD-10 by eps*255: {acc} (trained in {t.seconds:.1f} s)")
    assert natural > 75
    assert acc[0] == natural
    assert all(acc[a] > acc[b] for a, b in zip(epsilons, epsilons[1:])), acc  # strictly down the ladder
    assert acc[8] < natural - 12  # a real drop already at 8/255 ...
    assert acc[32] < 20  # ... and near-total at the usual Fashion-MNIST budget (~0.1)
    # Random +-eps noise of the same size barely matters: it is the gradient direction that hurts.
    g = torch.Generator().manual_seed(0)
    noise = (torch.randint(0, 2, t.x.shape, generator=g) * 2 - 1) * (8 / 255)
    assert top1(t.model, (t.x + noise).clamp(0, 1), t.y) > natural - 4


def test_more_steps_never_raise_the_accuracy(undefended, top1, single_thread):
    t = undefended
    x, y = t.x[:192], t.y[:192]
    with single_thread():
        acc = [top1(t.model, pgd_attack(t.model, x, y, eps=4 / 255, steps=k,
                                        generator=torch.Generator().manual_seed(0)), y) for k in (1, 10, 50)]
    print(f"\nPGD-1/10/50 at 4/255 on 192 images: {acc}")
    assert acc[0] >= acc[1] >= acc[2]
    assert acc[0] > acc[2]  # and more steps do find more


def test_robust_accuracy_matches_the_attack_and_reduces_once(undefended, top1, single_thread, monkeypatch):
    t = undefended
    images = (t.x * 255).round().to(torch.uint8)[:96]
    labels = t.y[:96]
    loader = torch.utils.data.DataLoader(TensorImageDataset(images, labels), batch_size=48, collate_fn=collate_batch)
    calls = []
    real = attacks.all_reduce_sum

    def counting(values, env):
        calls.append(len(values))
        return real(values, env)

    monkeypatch.setattr(attacks, "all_reduce_sum", counting)
    with single_thread():
        m = robust_accuracy(t.model, loader, lambda u: u.float() / 255, eps=8 / 255, steps_list=(2, 5), seed=3)
    assert calls == [5]  # natural, two attacks, images, seconds: one reduction for the whole evaluation
    assert set(m) == {"natural", "pgd2", "pgd5", "images", "eval_images_per_s"} and m["images"] == 96
    x = images.float() / 255
    assert m["natural"] == pytest.approx(top1(t.model, x, labels))
    assert m["natural"] > m["pgd2"] >= m["pgd5"]
    # the same seeded starts as robust_accuracy's: batch i of rank 0 uses mix_seed(seed, 0, i)
    expected = 0.0
    for i in range(2):
        sl = slice(48 * i, 48 * (i + 1))
        g = torch.Generator().manual_seed(attacks.mix_seed(3, 0, i))
        with single_thread():
            x_adv = pgd_attack(t.model, x[sl], labels[sl], eps=8 / 255, steps=5, generator=g)
        expected += top1(t.model, x_adv, labels[sl]) * 48 / 96
    assert m["pgd5"] == pytest.approx(expected)


def test_robust_accuracy_with_eps_zero_and_a_distributed_env_shape():
    ds = TensorImageDataset(torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8), torch.arange(10) % 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_batch)
    net = NormalizedModel(_linear(), (0.5,), (0.25,))
    m = robust_accuracy(net, loader, lambda u: u.float() / 255, eps=0.0, steps_list=(3, 1), env=DistEnv())
    assert m["natural"] == m["pgd3"] == m["pgd1"] and m["images"] == 10


def test_argparse_type_reports_the_parse_eps_message():
    from pedconv.tasks.adversarial import AdversarialTraining

    p = argparse.ArgumentParser(exit_on_error=False)
    AdversarialTraining().add_arguments(p)
    with pytest.raises(argparse.ArgumentError, match="zero denominator"):
        p.parse_args(["--eps", "1/0"])
