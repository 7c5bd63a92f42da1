"""mmrep: multimodal representation-learning experiments as composable Hydra configs."""

__version__ = "0.1.0"
