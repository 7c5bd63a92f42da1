"""The steps of one run, in the order ``mmrep.train`` calls them: :mod:`~mmrep.pipeline.preflight` (config checks
that need no torch), :mod:`~mmrep.pipeline.build`, :mod:`~mmrep.pipeline.checks`, :mod:`~mmrep.pipeline.resume`,
:mod:`~mmrep.pipeline.fit`, :mod:`~mmrep.pipeline.measure`, and :mod:`~mmrep.pipeline.errors` around them all.

Importing this package imports none of them (``--help`` and config errors answer without torch)."""
