"""Errors the runtime reports as one clear line, never as a traceback."""


class FrontalizeError(Exception):
    """Base class: str(err) is a one-line message fit for a user."""


class ImageError(FrontalizeError):
    """The file is not an image we can read (missing, empty, truncated, corrupt)."""


class NoFaceError(FrontalizeError):
    """No usable face in the image."""


class ModelError(FrontalizeError):
    """A model file is missing, corrupt, or has an unexpected signature."""


def shown(text) -> str:
    """One printable line: newlines, other control characters and undecodable file-name bytes
    (surrogate escapes) are written as backslash escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in str(text))


def first_line(e: Exception) -> str:
    """The first line of an exception's message (its type name when empty), at most 200 characters:
    what a library's multi-line error adds to one of our one-line messages."""
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]
