"""The NRP purifier networks (Naseer et al. 2020) and the SSP attack, against plain functional references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers import NeuralRepresentationPurifier
from art_purifiers.attacks.ssp import SelfSupervisedPerturbation, layer_features, self_supervised_perturbation
from art_purifiers.nets import ARCHITECTURES
from art_purifiers.nets.edsr import EDSR
from art_purifiers.nets.nrp import NRPGenerator, NRPResidualGenerator, RelativisticCritic, load_reference_state_dict


def _conv(state: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)


def _dense_reference(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    """One dense block written out: conv k sees the input and the k-1 earlier outputs; the residual is scaled 0.2."""
    seen = x
    for k in range(1, 5):
        seen = torch.cat([seen, F.leaky_relu(_conv(state, f"{prefix}.conv{k}", seen), 0.2)], 1)
    return x + 0.2 * _conv(state, f"{prefix}.conv5", seen)


def _rrdb_reference(state: dict[str, torch.Tensor], blocks: int, x: torch.Tensor) -> torch.Tensor:
    features = _conv(state, "conv_first", x)
    for b in range(blocks):
        inner = features
        for j in (1, 2, 3):
            inner = _dense_reference(state, f"RRDB_trunk.{b}.RDB{j}", inner)
        features = features + 0.2 * inner
    return _conv(state, "trunk_conv", features)


def _residual_reference(state: dict[str, torch.Tensor], blocks: int, x: torch.Tensor) -> torch.Tensor:
    features = F.leaky_relu(_conv(state, "conv_first", x), 0.1)
    for b in range(blocks):
        features = features + _conv(
            state, f"recon_trunk.{b}.conv2", F.relu(_conv(state, f"recon_trunk.{b}.conv1", features))
        )
    return _conv(state, "conv_last", features)


@pytest.mark.parametrize(
    "network, reference",
    [
        (NRPGenerator(features=8, blocks=2, growth=4), _rrdb_reference),
        (NRPResidualGenerator(features=8, blocks=2), _residual_reference),
    ],
    ids=["rrdb", "residual"],
)
def test_generators_match_a_functional_reference_at_any_size(network: nn.Module, reference) -> None:
    torch.manual_seed(0)
    state = {key: value.detach() for key, value in network.state_dict().items()}
    for size in [(1, 1), (5, 7), (32, 32)]:
        x = torch.rand(2, 3, *size)
        torch.testing.assert_close(network(x), reference(state, 2, x), rtol=1e-5, atol=1e-6)


def test_key_names_are_the_authors() -> None:
    rrdb = set(NRPGenerator(features=8, blocks=1, growth=4).state_dict())
    expected = {"conv_first.weight", "conv_first.bias", "trunk_conv.weight", "trunk_conv.bias"}
    expected |= {f"RRDB_trunk.0.RDB{j}.conv{k}.{p}" for j in (1, 2, 3) for k in range(1, 6) for p in ("weight", "bias")}
    assert rrdb == expected
    residual = set(NRPResidualGenerator(features=8, blocks=1).state_dict())
    assert residual == {f"{m}.{p}" for m in ("conv_first", "recon_trunk.0.conv1", "recon_trunk.0.conv2", "conv_last")
                        for p in ("weight", "bias")}  # fmt: skip


def test_full_sizes_have_the_papers_parameter_counts() -> None:
    def millions(network: nn.Module) -> float:
        return sum(p.numel() for p in network.parameters()) / 1e6

    assert millions(NRPGenerator()) == pytest.approx(16.5, abs=0.1)  # the paper's 16.5 M
    assert millions(NRPResidualGenerator()) == pytest.approx(1.7, abs=0.05)
    assert {"nrp-generator", "nrp-residual-generator", "nrp-critic"} <= set(ARCHITECTURES)


def test_no_skip_from_input_to_output() -> None:
    network = NRPResidualGenerator(features=8, blocks=1)
    with torch.no_grad():
        network.conv_last.weight.zero_()
        network.conv_last.bias.zero_()
    assert network(torch.rand(1, 3, 8, 8)).abs().max() == 0  # a skip would return the input here


@pytest.mark.parametrize(
    "network", [NRPGenerator(features=8, blocks=3, growth=4), NRPResidualGenerator(features=8, blocks=2)], ids=type
)
def test_released_state_dicts_load_with_their_shape(network: nn.Module) -> None:
    state = {f"module.{key}": value.half() for key, value in network.state_dict().items()}  # DataParallel, fp16
    loaded = load_reference_state_dict(state)
    assert type(loaded) is type(network) and not loaded.training
    x = torch.rand(1, 3, 9, 9)
    torch.testing.assert_close(loaded(x), network.half().float()(x))


def test_foreign_or_broken_state_dicts_are_refused() -> None:
    with pytest.raises(ValueError, match="conv_first"):
        load_reference_state_dict(EDSR(blocks=1, features=8).state_dict())
    state = NRPResidualGenerator(features=8, blocks=1).state_dict()
    with pytest.raises(ValueError, match="Neither NRP variant"):
        load_reference_state_dict({"conv_first.weight": state["conv_first.weight"]})
    state["recon_trunk.0.conv2.weight"] = torch.zeros(8, 4, 3, 3)
    with pytest.raises(ValueError, match="does not fit NRPResidualGenerator"):
        load_reference_state_dict(state)
    with pytest.raises(ValueError, match="blocks must be a positive integer"):
        NRPGenerator(blocks=0)


def test_relativistic_critic_scores_each_image() -> None:
    critic = RelativisticCritic(features=4, depth=2)
    real, fake = critic(torch.rand(3, 3, 16, 16)), critic(torch.rand(5, 3, 16, 16))
    assert real.shape == (3,) and fake.shape == (5,)
    torch.testing.assert_close(RelativisticCritic.relativistic_logits(real, fake), real - fake.mean())


# --- SSP ---------------------------------------------------------------------------------------------------------


def _small_net() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


def test_ssp_first_step_matches_the_analytic_gradient_of_a_linear_feature_map() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 12))
    x = rng.uniform(0.2, 0.8, size=(2, 3, 2, 2))

    def features(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ torch.as_tensor(weight, dtype=images.dtype).T

    x_t = torch.as_tensor(x)
    start = self_supervised_perturbation(features, x_t, 0.1, 0.03, 0, generator=torch.Generator().manual_seed(3))
    step = self_supervised_perturbation(features, x_t, 0.1, 0.03, 1, generator=torch.Generator().manual_seed(3))
    x0 = start.numpy().reshape(2, -1)
    gradient = (x0 - x.reshape(2, -1)) @ weight.T @ weight  # d/dx' ||W(x' - x)||^2, up to a positive factor
    expected = np.clip(np.clip(x0 + 0.03 * np.sign(gradient), x.reshape(2, -1) - 0.1, x.reshape(2, -1) + 0.1), 0, 1)
    np.testing.assert_allclose(step.numpy().reshape(2, -1), expected, atol=1e-12)
    assert np.abs(x0 - x.reshape(2, -1)).max() <= 0.1 and not np.allclose(x0, x.reshape(2, -1))


def test_ssp_stays_in_budget_and_distorts_features_more_than_noise() -> None:
    network = _small_net().eval()
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    features = layer_features(network, "3")
    adversarial = self_supervised_perturbation(features, x, 8 / 255, 2 / 255, 10)
    assert (adversarial - x).abs().max() <= 8 / 255 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
    noise = (x + (8 / 255) * torch.sign(torch.randn_like(x))).clamp(0, 1)
    with torch.no_grad():
        distortion = (features(adversarial) - features(x)).pow(2).mean()
        assert distortion > 1.5 * (features(noise) - features(x)).pow(2).mean()  # noise at the ball's corners


def test_layer_features_stops_at_the_layer_and_names_what_exists() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1))  # last breaks
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(layer_features(network, "1")(x), torch.relu(network[0](x)))
    with pytest.raises(ValueError, match=r"no layer named 'conv3_3'.*'0', '1'"):
        layer_features(network, "conv3_3")


def test_ssp_art_attack_runs_the_estimators_preprocessing_and_ignores_labels() -> None:
    network = _small_net()
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    classifier = PyTorchClassifier(network, nn.CrossEntropyLoss(), (3, 8, 8), 10, clip_values=(0.0, 1.0),
                                   preprocessing=(mean.reshape(3, 1, 1), std.reshape(3, 1, 1)))  # fmt: skip
    x = np.random.default_rng(2).uniform(size=(5, 3, 8, 8)).astype(np.float32)
    attack = SelfSupervisedPerturbation(classifier, layer="2", eps=0.05, eps_step=0.01, max_iter=5, batch_size=2,
                                        seed=7, verbose=False)  # fmt: skip
    result = attack.generate(x)
    np.testing.assert_array_equal(result, attack.generate(x, y=np.zeros(5, dtype=int)))
    assert result.dtype == np.float32 and np.abs(result - x).max() <= 0.05 + 1e-6

    # ART moved the network to its device (CUDA where there is one): the plain module must live there too
    normalised = nn.Sequential(_Normalise(mean, std), network).to(next(network.parameters()).device)
    plain = SelfSupervisedPerturbation(normalised, layer="1.2", eps=0.05, eps_step=0.01, max_iter=5, batch_size=2,
                                       seed=7, verbose=False)  # fmt: skip
    np.testing.assert_allclose(result, plain.generate(x), atol=1e-6)


class _Normalise(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def test_ssp_seeds_reproduce_and_differ() -> None:
    network = _small_net()
    x = np.random.default_rng(3).uniform(size=(3, 3, 8, 8)).astype(np.float32)

    def run(seed: int) -> np.ndarray:
        return SelfSupervisedPerturbation(network, layer="3", max_iter=2, seed=seed, verbose=False).generate(x)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"estimator": "model"}, TypeError, "ART PyTorch estimator or a torch.nn.Module"),
        ({"eps": 0.0}, ValueError, "eps and eps_step must be positive"),
        ({"max_iter": 0}, ValueError, "max_iter must be a positive integer"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
        ({"clip_values": (1.0, 0.0)}, ValueError, "low < high"),
        ({"layer": "head"}, ValueError, "no layer named 'head'"),
    ],
)
def test_ssp_rejects_bad_parameters(kwargs: dict, error: type, match: str) -> None:
    arguments = {"estimator": _small_net(), **kwargs}
    with pytest.raises(error, match=match):
        SelfSupervisedPerturbation(**arguments)


def test_ssp_on_an_art_estimator_needs_a_layer_and_numpy_input() -> None:
    classifier = PyTorchClassifier(_small_net(), nn.CrossEntropyLoss(), (3, 8, 8), 10, clip_values=(0.0, 1.0))
    with pytest.raises(ValueError, match="needs layer="):
        SelfSupervisedPerturbation(classifier)
    with pytest.raises(TypeError, match="float NCHW numpy array"):
        SelfSupervisedPerturbation(classifier, layer="1", verbose=False).generate(torch.rand(1, 3, 8, 8))


# --- the defence ---------------------------------------------------------------------------------------------------


def _purifier() -> nn.Module:
    torch.manual_seed(4)
    return NRPResidualGenerator(features=8, blocks=2)


def test_static_purification_is_the_network_clipped_on_any_range(images: np.ndarray) -> None:
    network = _purifier()
    with torch.no_grad():
        expected = network(torch.from_numpy(images)).clamp(0, 1).numpy()
    np.testing.assert_allclose(NeuralRepresentationPurifier(network=network)(images)[0], expected, atol=1e-6)
    scaled = NeuralRepresentationPurifier(network=network, clip_values=(0, 255))(images * 255)[0]
    np.testing.assert_allclose(scaled / 255, expected, atol=1e-5)
    assert not NeuralRepresentationPurifier(network=network).randomized


def test_dynamic_inference_purifies_a_projected_noisy_neighbour(images: np.ndarray) -> None:
    defence = NeuralRepresentationPurifier(network=nn.Identity(), dynamic=True, seed=1)  # shows the neighbour itself
    assert defence.randomized
    neighbour = defence(images)[0]
    change = neighbour - images
    assert np.abs(change).max() <= 16 / 255 + 1e-6 and neighbour.min() >= 0 and neighbour.max() <= 1
    inside = (images > 0.1) & (images < 0.9)  # away from the clip
    clipped_normal = np.clip(np.random.default_rng(0).normal(0, 0.05, 10**6), -16 / 255, 16 / 255)
    assert abs(change[inside].std() - clipped_normal.std()) < 0.002
    assert abs(change[inside].mean()) < 0.002
    np.testing.assert_array_equal(neighbour, NeuralRepresentationPurifier(network=nn.Identity(), dynamic=True,
                                                                          seed=1)(images)[0])  # fmt: skip
    assert not np.array_equal(neighbour, defence(images)[0])  # the next call draws anew
    other = NeuralRepresentationPurifier(network=nn.Identity(), dynamic=True, seed=2)(images)[0]
    assert not np.array_equal(neighbour, other)


def test_default_gradient_is_exact_and_identity_bpda_bypasses(images: np.ndarray) -> None:
    network = _purifier()
    x = torch.from_numpy(images).requires_grad_(True)
    weights = torch.from_numpy(np.random.default_rng(1).normal(size=images.shape).astype(np.float32))
    (expected,) = torch.autograd.grad((network(x) * weights).sum(), x)  # the clip passes gradients straight through
    gradient = NeuralRepresentationPurifier(network=network).estimate_gradient(images, weights.numpy())
    np.testing.assert_allclose(gradient, expected.numpy(), rtol=1e-4, atol=1e-6)
    bypass = NeuralRepresentationPurifier(network=network, bpda="identity").estimate_gradient(images, weights.numpy())
    np.testing.assert_array_equal(bypass, weights.numpy())


def test_purifiers_load_from_the_authors_files_and_zoo_files(tmp_path, images: np.ndarray) -> None:
    from art_purifiers import zoo

    network = _purifier()
    expected = NeuralRepresentationPurifier(network=network)(images)[0]
    authors = tmp_path / "NRP_resG.pth"
    torch.save(network.state_dict(), authors)
    np.testing.assert_allclose(NeuralRepresentationPurifier(network=str(authors))(images)[0], expected, atol=1e-6)
    ours = tmp_path / "purifier.pt"
    card = {"data": "none", "resolution": 8, "metrics": {}, "command": "test"}
    zoo.save(ours, network, "nrp-residual-generator", {"features": 8, "blocks": 2}, card, half=False)
    np.testing.assert_allclose(NeuralRepresentationPurifier(network=ours)(images)[0], expected, atol=1e-6)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an art-purifiers weight file"):
        NeuralRepresentationPurifier(network=other)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"network": "cifar10-nrp-nonexistent"}, ValueError, "python -m art_purifiers.training.nrp"),
        ({"dynamic": "yes"}, TypeError, "dynamic must be a bool"),
        ({"noise_std": -0.1}, ValueError, "noise_std must be a non-negative finite number"),
        ({"dynamic_eps": float("nan")}, ValueError, "dynamic_eps must be a non-negative finite number"),
    ],
)
def test_defence_rejects_bad_parameters(kwargs: dict, error: type, match: str) -> None:
    arguments = {"network": _purifier(), **kwargs}
    with pytest.raises(error, match=match):
        NeuralRepresentationPurifier(**arguments)


# --- the training recipe -------------------------------------------------------------------------------------------


def test_relativistic_losses_match_the_formula() -> None:
    from art_purifiers.training.nrp import relativistic_losses

    real, fake = np.array([1.0, -0.5, 2.0]), np.array([0.3, 0.1, -1.0])

    def bce(logits: np.ndarray, label: float) -> float:
        probability = 1 / (1 + np.exp(-logits))
        return float(-(label * np.log(probability) + (1 - label) * np.log(1 - probability)).mean())

    d_real, d_fake = real - fake.mean(), fake - real.mean()
    critic, purifier = relativistic_losses(torch.tensor(real), torch.tensor(fake))
    assert float(critic) == pytest.approx(bce(d_real, 1) + bce(d_fake, 0))
    assert float(purifier) == pytest.approx(bce(d_real, 0) + bce(d_fake, 1))


def test_training_steps_teach_the_purifier_to_match_clean_features() -> None:
    from art_purifiers.nets.classifier import CifarVGG
    from art_purifiers.training.nrp import LossWeights, SSPSettings, frozen_features, training_step

    torch.manual_seed(0)
    features = frozen_features(CifarVGG(widths=(8, 8), depths=(1, 1)), "features.relu2_1")
    purifier, critic = NRPResidualGenerator(features=8, blocks=1), RelativisticCritic(features=4, depth=1)
    optimizers = (torch.optim.Adam(purifier.parameters(), 1e-2), torch.optim.Adam(critic.parameters(), 1e-3))
    clean = torch.rand(8, 3, 16, 16)
    sampler = torch.Generator().manual_seed(0)
    losses = [training_step(purifier, critic, optimizers, features, clean, SSPSettings(steps=2), LossWeights(),
                            sampler)["feature_mae"] for _ in range(30)]  # fmt: skip
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])  # measured: 0.095 against 0.122


def test_the_suite_builds_the_defence_from_a_spec(tmp_path) -> None:
    from art_purifiers import zoo
    from art_purifiers.evaluation.targets import build_defences

    file = tmp_path / "purifier.pt"
    card = {"data": "none", "resolution": 8, "metrics": {}, "command": "test"}
    zoo.save(file, _purifier(), "nrp-residual-generator", {"features": 8, "blocks": 2}, card, half=False)
    (defence,), _ = build_defences(f"NeuralRepresentationPurifier:network='{file}',dynamic=True", None)
    assert isinstance(defence, NeuralRepresentationPurifier) and defence.dynamic and defence.randomized
    with pytest.raises(ValueError, match="known: .*NeuralRepresentationPurifier"):
        build_defences("NRP", None)


def test_a_chain_spec_puts_an_attackers_purifier_before_its_surrogate(tmp_path) -> None:
    from art_purifiers import zoo
    from art_purifiers.classifiers import load_classifier

    file, purifier = tmp_path / "attacker.pt", _purifier()
    card = {"data": "none", "resolution": 8, "metrics": {}, "command": "test"}
    zoo.save(file, purifier, "nrp-residual-generator", {"features": 8, "blocks": 2}, card, half=False)
    chain = load_classifier(f"{file}+cifar10-surrogate")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = zoo.load("cifar10-surrogate")(purifier.eval()(x).clamp(0, 1))
        torch.testing.assert_close(chain(x), expected)
    with pytest.raises(ValueError, match="neither a zoo name"):
        load_classifier("cifar10-surrogate+no-such-model")
