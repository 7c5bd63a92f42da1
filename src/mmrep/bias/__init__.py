from mmrep.bias.misalignment import (
    MisalignmentBias,
    ResolvedBias,
    powerset_index,
    powerset_subset,
)

__all__ = ["MisalignmentBias", "ResolvedBias", "powerset_index", "powerset_subset"]
