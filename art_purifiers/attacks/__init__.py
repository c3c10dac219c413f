"""Attack-side tools: EOT for randomized defences, the learned-approximator BPDA and the SSP attack."""

from art_purifiers.attacks.eot import EOTPyTorchClassifier, EOTRepeat
from art_purifiers.attacks.learned_bpda import LearnedBPDA, train_approximator
from art_purifiers.attacks.ssp import SelfSupervisedPerturbation

__all__ = ["EOTPyTorchClassifier", "EOTRepeat", "LearnedBPDA", "SelfSupervisedPerturbation", "train_approximator"]
