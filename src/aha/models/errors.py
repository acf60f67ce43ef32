"""The one error model loading raises: a one-line message naming the model and the fix (the CLI exits 2)."""


class ModelLoadError(RuntimeError):
    """One-line message: which model could not be loaded and what to do."""
