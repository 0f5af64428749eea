"""User-facing errors: the CLI prints them on one line and exits with status 2."""


class MaeError(Exception):
    """An error caused by the user's input (file, config, flag): printed as one line, no traceback."""


class ConfigError(MaeError):
    """Unknown config key, wrong type, bad value."""


class DataError(MaeError):
    """Missing, empty or corrupt data."""


class NonFiniteLossError(MaeError):
    """Training produced a NaN or inf loss."""
