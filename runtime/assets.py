"""Model files shipped inside the package (``runtime/assets/``), found with importlib.resources so
they work from a wheel as well as from the checkout. ``FRONTALIZE_ASSETS`` (a folder) overrides."""
from __future__ import annotations

import os
from importlib import resources

from .errors import ModelError


def asset(name: str) -> str:
    """Path of a bundled model file; ModelError naming the file when it is not there."""
    folder = os.environ.get("FRONTALIZE_ASSETS")
    path = os.path.join(folder, name) if folder else str(resources.files("runtime").joinpath("assets", name))
    if not os.path.isfile(path):
        raise ModelError(f"bundled model file {name} is missing ({path}): reinstall the package")
    return path
