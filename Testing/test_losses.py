"""The weighted Dice loss on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
from AneurysmSegLib.training.losses import WeightedDiceLoss, soft_dice, soft_dice_loss, weighted_dice_loss

S = 1e-4


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(2, 1, 4, 4, 4)
    target[0, 0, 1:3, 1:3, 1:3] = 1
    target[1, 0, 0, 0, :] = 1
    probs = torch.full_like(target, 0.1)
    probs[0, 0, 1:3, 1:3, 1:2] = 0.9
    probs[1, 0, 0, 0, :2] = 0.6
    return probs, target


def _hand_dice(p: torch.Tensor, g: torch.Tensor) -> float:
    p, g = p.flatten().tolist(), g.flatten().tolist()
    inter = sum(a * b for a, b in zip(p, g))
    den = sum(b * b for b in g) + sum(a * a for a in p)
    return 2 * (inter + S / 2) / (den + S)


def test_beta0_is_soft_dice_loss_by_hand() -> None:
    probs, target = _pair()
    by_hand = -(_hand_dice(probs[0], target[0]) + _hand_dice(probs[1], target[1])) / 2
    assert weighted_dice_loss(probs, target, beta=0.0).item() == pytest.approx(by_hand, rel=1e-6)
    assert soft_dice_loss(probs, target).item() == pytest.approx(by_hand, rel=1e-6)
    whole = -_hand_dice(probs, target)
    assert weighted_dice_loss(probs, target, beta=0.0, per_sample=False).item() == pytest.approx(whole, rel=1e-6)


def test_beta1_is_the_papers_formula() -> None:
    probs, target = _pair()
    d = [_hand_dice(probs[i], target[i]) for i in range(2)]
    expected = sum((1 - di) * -di for di in d) / 2
    assert weighted_dice_loss(probs, target, beta=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert WeightedDiceLoss(beta=0.5)(probs, target).item() == pytest.approx(
        sum((1 - di) ** 0.5 * -di for di in d) / 2, rel=1e-6
    )


def test_range_and_perfect_overlap() -> None:
    _, target = _pair()
    assert soft_dice_loss(target, target).item() == pytest.approx(-1.0, abs=1e-6)
    assert weighted_dice_loss(target, target, beta=1.0).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 3, 3, 3)
    assert soft_dice_loss(empty, empty).item() == pytest.approx(-1.0)  # both empty: perfect by the S terms
    assert soft_dice_loss(1 - target, target).item() == pytest.approx(0.0, abs=1e-4)


def test_poorer_overlap_gives_larger_loss_and_larger_weight() -> None:
    _, target = _pair()
    good = target * 0.9 + 0.05
    poor = target * 0.4 + 0.3
    assert soft_dice_loss(poor, target) > soft_dice_loss(good, target)
    # the WDL weight (1 - dsc)^beta grows as the overlap worsens, for every beta in (0, 1]
    for beta in (0.25, 0.5, 1.0):
        w_good = (1 - soft_dice(good, target)) ** beta
        w_poor = (1 - soft_dice(poor, target)) ** beta
        assert (w_poor > w_good).all()
    # and so the gradient magnitude: hard samples pull harder
    grads = []
    for p in (good, poor):
        p = p.clone().requires_grad_(True)
        weighted_dice_loss(p, target, beta=1.0).backward()
        grads.append(p.grad.abs().sum().item())
    assert grads[1] > grads[0]


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_weight_carries_no_gradient(beta: float) -> None:
    probs, target = _pair()
    p1 = probs.clone().requires_grad_(True)
    weighted_dice_loss(p1, target, beta=beta).backward()

    p2 = probs.clone().requires_grad_(True)
    dsc = soft_dice(p2, target)
    ((1 - dsc).detach() ** beta * -dsc).mean().backward()
    torch.testing.assert_close(p1.grad, p2.grad)

    p3 = probs.clone().requires_grad_(True)
    dsc3 = soft_dice(p3, target)
    ((1 - dsc3) ** beta * -dsc3).mean().backward()  # weight NOT detached: different gradient
    assert (p3.grad - p1.grad).abs().max() > 1e-3


def test_module_logits_and_shape_check() -> None:
    probs, target = _pair()
    logits = torch.logit(probs)
    a = WeightedDiceLoss(beta=1.0, logits=True)(logits, target)
    b = weighted_dice_loss(probs, target, beta=1.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    with pytest.raises(ValueError):
        weighted_dice_loss(probs, target[:, :, :2])
    with pytest.raises(ValueError):
        weighted_dice_loss(probs, target, beta=-1)
