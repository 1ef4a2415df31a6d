"""Installed library versions, recorded beside results (model metadata, benchmark runs)."""

import platform
from importlib import metadata


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    """Python's version and each distribution's (None where it is not installed)."""
    return {
        "python": platform.python_version(),
        **{name: installed_version(name) for name in distributions},
    }
