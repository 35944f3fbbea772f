"""Errors of the evaluation data layer, in a module of their own so that light code (the
``spanrag datasets`` command) can name them without loading the parsers."""


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message is what the user sees."""
