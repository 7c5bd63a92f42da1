"""The one exception type for bad user input: its message names the offending config key or file."""


class ConfigError(ValueError):
    """Raised at start-up when a config value (or an input file) cannot work.

    The message always starts with the config key, e.g. ``bias.theta: index 12 out of range 0..9``.
    """


def check_positive_ints(prefix: str, **values) -> None:
    """Raise ``ConfigError("<prefix>.<name>: must be a positive integer, got ...")`` for the first value that is
    not an integer >= 1 (Python or numpy)."""
    import numpy as np

    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{prefix}.{name}: must be a positive integer, got {value!r}")
