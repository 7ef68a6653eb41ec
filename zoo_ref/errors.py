"""The project's exception types: every error zoo raises for a bad config, checkpoint or input is one of these
(and also a ValueError / TypeError, so code that catches those keeps working)."""


class ZooError(Exception):
    """Base of zoo's own errors."""


class ConfigError(ZooError, ValueError):
    """A config.json (or config dict) zoo can't build a model from; the message names the field."""


class CheckpointError(ZooError, ValueError):
    """A checkpoint does not fit the model: the message lists every missing/unexpected/misshaped tensor."""


class InputError(ZooError, ValueError):
    """An argument's value does not fit (shape, range, consistency with the others); the message names it."""


class InputTypeError(ZooError, TypeError):
    """An argument has the wrong type; the message names it, what was expected and what came."""
