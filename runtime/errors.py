"""Errors the runtime reports as one clear line, never as a traceback."""


class FrontalizeError(Exception):
    """Base class: str(err) is a one-line message fit for a user."""


class ImageError(FrontalizeError):
    """The file is not an image we can read (missing, empty, truncated, corrupt)."""


class NoFaceError(FrontalizeError):
    """No usable face in the image."""


class ModelError(FrontalizeError):
    """A model file is missing, corrupt, or has an unexpected signature."""
