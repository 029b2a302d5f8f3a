"""ablate — an activation-function ablation benchmark for variational autoencoders."""

__version__ = "0.1.0"
