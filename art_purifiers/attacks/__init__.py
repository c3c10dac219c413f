"""Attack-side tools: EOT for randomized defences and the learned-approximator BPDA."""

from art_purifiers.attacks.eot import EOTPyTorchClassifier, EOTRepeat
from art_purifiers.attacks.learned_bpda import LearnedBPDA, train_approximator

__all__ = ["EOTPyTorchClassifier", "EOTRepeat", "LearnedBPDA", "train_approximator"]
