from mmrep.encoders.mlp import MLP, make_activation

__all__ = ["MLP", "make_activation"]
