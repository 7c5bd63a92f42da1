"""The one exception type for bad user input: its message names the offending config key or file."""


class ConfigError(ValueError):
    """Raised at start-up when a config value (or an input file) cannot work.

    The message always starts with the config key, e.g. ``bias.theta: index 12 out of range 0..9``.
    """
