"""The one exception type for bad input: its message is one sentence naming the input and the fix."""


class CMCLInputError(ValueError):
    """Raised before any expensive work when an input (dataset, plans, checkpoint, argument) cannot be used."""
