"""What every part of mmrep shares and that knows nothing of the rest: the data contract, the errors, atomic file
writes, tidy result tables, the CPU-thread budget and the preemption signal. Imports nothing of mmrep."""
