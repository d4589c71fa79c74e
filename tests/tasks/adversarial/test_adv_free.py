"""FreeAdversarialStep: the persistent perturbation, its FGSM update, resume, and that a short
Free adversarial training makes the tiny Fashion-MNIST CNN more robust than normal training."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pedconv.tasks.adversarial import FreeAdversarialStep, NormalizedModel, pgd_attack
from pedconv.training.data import BatchPreprocessor

MEAN, STD = (0.3,), (0.4,)


def _net(chans: int = 1) -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(chans, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _batch(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _input_grad(net: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x_adv.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net((x - MEAN[0]) / STD[0]), y), [x])
    return g


def test_first_forward_is_the_classification_forward():
    # With delta = 0, augmenting pixels then normalising equals the classification pipeline
    # (normalise, then crop with padding at the normalised black, then flip), same seed.
    step = FreeAdversarialStep(MEAN, STD, eps=0.1, augment=True)
    net = _net()
    images, labels = _batch()
    r = step(net, (images, labels), seed=7)
    x = BatchPreprocessor(MEAN, STD, augment=True, pad=4)(images, seed=7)
    torch.testing.assert_close(r.loss, F.cross_entropy(net(x), labels))
    assert r.count == 4 and int(r.metrics["top1"]) == 100 * int((net(x).argmax(1) == labels).sum())


def test_delta_persists_is_updated_by_eps_sign_grad_and_clipped():
    eps = 0.25
    step = FreeAdversarialStep(MEAN, STD, eps=eps)
    net = _net()
    images, labels = _batch()
    x = images.float() / 255
    expected = torch.zeros_like(x)
    for _ in range(4):  # the replays of one batch
        r = step(net, (images, labels), seed=0)
        x_adv = (x + expected).clamp(0, 1)
        torch.testing.assert_close(r.loss, F.cross_entropy(net((x_adv - MEAN[0]) / STD[0]), labels))
        grad = _input_grad(net, x_adv, labels)
        r.loss.backward()
        step.after_backward()
        expected = (expected + eps * grad.sign()).clamp(-eps, eps)
        torch.testing.assert_close(step.delta, expected)
        with torch.no_grad():  # the "optimizer step", so that the gradients differ between replays
            for p in net.parameters():
                p -= 0.5 * p.grad
                p.grad = None
    assert step.delta.abs().max() == pytest.approx(eps)
    assert set(step.delta.unique().tolist()) <= {-eps, 0.0, eps}
    # a new batch of the same shape starts from the same delta (Free AT never resets it)
    images2, labels2 = _batch(seed=1)
    before = step.delta.clone()
    r = step(net, (images2, labels2), seed=0)
    x2 = (images2.float() / 255 + before).clamp(0, 1)
    torch.testing.assert_close(r.loss, F.cross_entropy(net((x2 - MEAN[0]) / STD[0]), labels2))


def test_delta_resets_when_the_batch_shape_changes():
    step = FreeAdversarialStep(MEAN, STD, eps=0.25)
    net = _net()
    step(net, _batch(4), seed=0).loss.backward()
    step.after_backward()
    assert step.delta.abs().sum() > 0
    step(net, _batch(3), seed=0)
    assert step.delta.shape == (3, 1, 6, 6) and not step.delta.any()


def test_after_backward_without_a_gradient_is_a_no_op_and_nonfinite_counts_as_zero():
    step = FreeAdversarialStep(MEAN, STD, eps=0.25)
    net = _net()
    step.after_backward()  # before any forward
    r = step(net, _batch(), seed=0)
    step.after_backward()  # forward but no backward: nothing to read
    assert not step.delta.any()
    r = step(net, _batch(), seed=0)
    (r.loss * float("nan")).backward()
    step.after_backward()
    assert not step.delta.any()


def test_state_dict_round_trip_continues_the_perturbation():
    step = FreeAdversarialStep(MEAN, STD, eps=0.25)
    net = _net()
    for _ in range(2):
        step(net, _batch(), seed=0).loss.backward()
        step.after_backward()
    state = step.state_dict()
    assert state["delta"].device.type == "cpu" and state["eps"] == 0.25
    resumed = FreeAdversarialStep(MEAN, STD, eps=0.25)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed(net, _batch(seed=3), seed=0).loss, step(net, _batch(seed=3), seed=0).loss)
    state["delta"].zero_()  # the resumed step holds its own copy
    assert resumed.delta.any()
    with pytest.raises(ValueError, match="eps"):
        FreeAdversarialStep(MEAN, STD, eps=0.1).load_state_dict(step.state_dict())
    fresh = FreeAdversarialStep(MEAN, STD)
    fresh.load_state_dict(FreeAdversarialStep(MEAN, STD).state_dict())  # before the first batch: None
    assert fresh.delta is None


def test_out_chans_replicates_after_normalising_and_delta_stays_in_data_channels():
    step = FreeAdversarialStep(MEAN, STD, eps=0.25, out_chans=3)
    net = _net(chans=3)
    r = step(net, _batch(), seed=0)
    r.loss.backward()
    step.after_backward()
    assert step.delta.shape == (4, 1, 6, 6)


def test_free_adversarial_training_is_more_robust_than_normal_training(undefended, make_cnn, top1, single_thread):
    # Free AT of the same CNN at eps = 8/255: one pass over the same 6000 images, each batch
    # replayed m = 4 times (376 optimizer steps; the undefended model had 2 epochs = 188), then
    # both face the same PGD-10 at 8/255 and 16/255.
    t, spec = undefended, undefended.spec
    torch.manual_seed(0)
    inner = make_cnn()
    opt = torch.optim.Adam(inner.parameters(), 2e-3)
    step = FreeAdversarialStep(spec.mean, spec.std, eps=8 / 255)
    images, labels = spec.train.images, spec.train.labels
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    with single_thread():
        for i in range(0, len(labels), 64):
            batch = (images[perm[i:i + 64]], labels[perm[i:i + 64]])
            for _ in range(4):  # replay = m
                opt.zero_grad()
                step(inner, batch, seed=i).loss.backward()
                step.after_backward()
                opt.step()
        robust = NormalizedModel(inner, spec.mean, spec.std).eval()
        acc = {}
        for name, model in (("undefended", t.model), ("free", robust)):
            for e in (8, 16):
                x_adv = pgd_attack(model, t.x, t.y, eps=e / 255, steps=10, generator=torch.Generator().manual_seed(0))
                acc[name, e] = top1(model, x_adv, t.y)
            acc[name, 0] = top1(model, t.x, t.y)
    print(f"\nPGD-10 accuracy (%), (model, eps*255): {acc}")
    assert acc["free", 0] > 65  # still a classifier
    assert acc["free", 8] > acc["undefended", 8] + 2
    assert acc["free", 16] > acc["undefended", 16] + 10
