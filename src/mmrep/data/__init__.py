"""Datasets: each a ``LightningDataModule`` whose batches follow the data contract (:mod:`mmrep.core.contract`)."""
