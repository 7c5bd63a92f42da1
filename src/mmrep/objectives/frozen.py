"""``objective=frozen``: encoders for every modality and nothing to train — for measuring encoders as built
(random or pretrained, frozen feature extractors) with ``fit: false``."""

from __future__ import annotations

from collections.abc import Sequence

from mmrep.core.errors import ConfigError
from mmrep.objectives.base import Objective


class FrozenEncoders(Objective):
    """One encoder per modality (``modalities``, default all of the dataset's), parameters frozen, in eval mode.

    Use with ``fit: false`` (and optionally ``ckpt_path`` of a run with the same encoders):
    ``python -m mmrep.train fit=false objective=frozen metric=alignment``."""

    loss_name = "none"
    shared_space = False

    def __init__(
        self,
        data,
        encoders,
        encoding_size: int | None = None,
        modalities: Sequence[str] | None = None,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__(data, encoders, encoding_size, optimizer, scheduler, scheduler_interval)
        names = data.check_modalities(modalities or data.names, "objective.modalities")
        self.encoders = self.build_encoders(names)
        self.encoders.requires_grad_(False)
        self.eval()

    def step_loss(self, batch):
        """No loss: training (or validating) frozen encoders is a configuration error."""
        raise ConfigError("objective=frozen: nothing to train; run with fit=false")

    def configure_optimizers(self):
        raise ConfigError("objective=frozen: nothing to train; run with fit=false")
