"""Our APGD against Croce & Hein's released APGD, exact linear-model answers, EOT success checks and targeting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from art_purifiers.attacks.apgd import apgd, checkpoints, dlr_loss, margin_loss
from art_purifiers.attacks.transfer import diverse_input, momentum_iterative


def linear_model(classes: int = 10, size: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes))
    return model.eval()


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)
    ).eval()


def batch(count: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand((count, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_checkpoints_follow_croce_and_hein_schedule() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (their Algorithm 1) -> iterations for 100 steps
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_and_margin_losses_against_hand_computed_values() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.5]])
    y = torch.tensor([0, 0])
    # row 0: -(3 - 1) / (3 - 0.5); row 1: -(0 - 2) / (2 - 0.5)
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([-2 / 2.5, 2 / 1.5]))
    assert torch.allclose(margin_loss(logits, y), torch.tensor([-2.0, 2.0]))
    target = torch.tensor([3, 2])
    # targeted: -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2)
    assert torch.allclose(dlr_loss(logits, y, target), torch.tensor([-(3 + 1) / (3 - (0.5 - 1) / 2), 1 / 1.75]))
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_matches_the_released_apgd_on_the_same_images(loss: str) -> None:
    # The same algorithm as pyautoattack's APGDAttack (Croce & Hein's code): the same images must end up broken.
    from pyautoattack.autopgd_base import APGDAttack

    model, x = small_net(), batch(64)
    y = model(x).argmax(1)
    eps = 0.02
    ours = apgd(model, x, y, eps, steps=50, loss=loss, seed=0)
    reference = APGDAttack(model, n_iter=50, norm="Linf", eps=eps, loss=loss, seed=0, device="cpu")
    theirs = reference.perturb(x, y)
    with torch.no_grad():
        ours_correct = model(ours.x_adv).argmax(1).eq(y)
        theirs_correct = model(theirs).argmax(1).eq(y)
    assert 0 < int(theirs_correct.sum()) < len(x)  # the budget leaves something to compare
    assert abs(int(ours_correct.sum()) - int(theirs_correct.sum())) <= 2
    assert float((ours.x_adv - x).abs().max()) <= eps + 1e-6


def test_linf_and_l2_budgets_and_box_are_respected() -> None:
    model, x = small_net(), batch()
    y = model(x).argmax(1)
    for norm, eps in (("Linf", 0.03), ("L2", 0.5)):
        result = apgd(model, x, y, eps, norm=norm, steps=10, restarts=2)
        delta = (result.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
        assert 0 <= float(result.x_adv.min()) and float(result.x_adv.max()) <= 1


def test_exact_answer_on_a_linear_two_class_model() -> None:
    # logit difference w . (x - 0.5) with |w| = 1: Linf eps flips an image exactly when its margin is below
    # eps * ||w||_1; images are built with known margins on either side of the budget.
    size = 3 * 4 * 4
    w = torch.ones(size)
    model = nn.Sequential(nn.Flatten(), nn.Linear(size, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w, -w]) / 2)
        model[1].bias.copy_(torch.tensor([-0.25 * size, 0.25 * size]))
    margins = torch.tensor([0.5, 1.0, 1.5, 2.5, 3.5])  # in units of eps * ||w||_1 / 2
    eps = 1 / 255
    x = 0.5 + (margins * eps).view(-1, 1, 1, 1).expand(-1, 3, 4, 4) / 2
    y = torch.zeros(len(x), dtype=torch.long)
    result = apgd(model, x, y, eps, steps=20, loss="margin")
    broken = result.unfooled == 0
    assert broken.tolist() == (margins < 2).tolist()


def test_never_returns_the_clean_image_and_keeps_the_best_iterate() -> None:
    model, x = small_net(), batch()
    y = model(x).argmax(1)
    result = apgd(model, x, y, 1e-3, steps=5)  # a budget too small to break anything
    assert bool(((result.x_adv - x).flatten(1).abs().amax(1) > 0).all())
    assert result.loss_curve.shape == (1, 6)
    assert bool((result.loss_curve.diff(dim=1) >= -1e-6).all())  # the best loss never decreases


class CoinFlipModel(nn.Module):
    """Correct with probability 1/2 per draw, whatever the input (a randomized defence no attack can beat)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coin = torch.randint(0, 2, (len(x),)).float()
        logits = torch.stack([coin, 1 - coin], dim=1) * 10
        return logits + 0 * self.scale * x.flatten(1).sum(1, keepdim=True)


def test_success_check_averages_over_the_eot_draws() -> None:
    # With one draw, half of the images look "broken" by luck; with 32 draws averaged, no image is fooled in every
    # draw, so none may be reported as broken (a check on one draw would stop at a lucky draw).
    x, y = batch(40), torch.zeros(40, dtype=torch.long)
    single = apgd(CoinFlipModel(), x, y, 0.03, steps=1, eot=1)
    averaged = apgd(CoinFlipModel(), x, y, 0.03, steps=1, eot=32)
    assert int((single.unfooled == 0).sum()) > 5
    assert int((averaged.unfooled == 0).sum()) == 0
    assert 0.2 < float(averaged.unfooled.mean()) < 0.8


def test_targeted_attack_reaches_its_target_not_just_any_wrong_class() -> None:
    model, x = linear_model(), batch(32)
    y = model(x).argmax(1)
    target = (y + 3) % 10
    result = apgd(model, x, y, 0.1, steps=30, loss="ce", target=target)
    with torch.no_grad():
        predicted = model(result.x_adv).argmax(1)
    hit = predicted == target
    assert float(hit.float().mean()) > 0.5
    # unfooled counts draws that did NOT reach the target: an image misclassified as another class is not a success
    assert torch.equal(result.unfooled == 0, hit)


def test_bad_arguments_raise_clear_errors() -> None:
    model, x = linear_model(), batch(4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="norm"):
        apgd(model, x, y, 0.1, norm="L1")
    with pytest.raises(ValueError, match="loss"):
        apgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(ValueError, match="eps"):
        apgd(model, x, y, 0.0)
    with pytest.raises(ValueError, match="target"):
        apgd(model, x, y, 0.1, target=y.clone())
    with pytest.raises(ValueError, match="eot"):
        apgd(model, x, y, 0.1, eot=0)
    with pytest.raises(TypeError, match="floating-point"):
        apgd(model, x.numpy(), y, 0.1)  # type: ignore[arg-type]


def test_momentum_iterative_transfer_stays_in_budget_and_transfers() -> None:
    source, x = small_net(0), batch(64)
    y = source(x).argmax(1)
    plain = momentum_iterative(source, x, y, 0.1, steps=10)
    diverse = momentum_iterative(source, x, y, 0.1, steps=10, diversity=0.5, seed=1)
    noise = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        noise_accuracy = float(source(noise).argmax(1).eq(y).float().mean())
    for x_adv in (plain, diverse):
        assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
        with torch.no_grad():
            assert float(source(x_adv).argmax(1).eq(y).float().mean()) < noise_accuracy - 0.3
    with pytest.raises(ValueError, match="probability"):
        momentum_iterative(source, x, y, 0.05, diversity=2.0)


def test_diverse_input_resizes_and_pads_to_a_fixed_larger_size() -> None:
    x = torch.rand((2, 3, 40, 40), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    outputs = [diverse_input(x, 1.0, generator) for _ in range(6)]
    assert all(o.shape[-2:] == (44, 44) for o in outputs)  # round(40 * 1.1)
    assert torch.equal(diverse_input(x, 0.0, generator), x)
    assert len({float(o.sum()) for o in outputs}) > 1  # random sizes
    assert all(float((o == 0).float().mean()) > 0 for o in outputs)  # the zero padding
