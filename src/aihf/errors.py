"""One exception type for bad input: its message is the single line a user sees before training starts."""


class ConfigError(ValueError):
    """Bad configuration or data, detected before any training; the message names the key, file or shape."""


class TrainingDiverged(RuntimeError):
    """A loss, parameter or evaluation became NaN or infinite: the run stops (exit code 3), its last checkpoint kept."""
