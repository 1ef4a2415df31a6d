"""Folders this package creates carry a marker; nothing unmarked is ever removed or written into.

The rule for every command: a file or folder the package did not create is never deleted,
moved or overwritten. A folder it creates for its own output (a training output folder,
checkpoints, the materialised bundled digits, cached backbones, benchmark results) holds
the marker file MARKER. Before the package writes into or removes such a folder it checks
the marker; a path that is taken by anything else stops the command with one line naming it.
An existing folder that holds no file (empty, or only empty folders such as the mount point
of another volume) is taken over (marked): writing into it destroys nothing.
"""

import shutil
from pathlib import Path

from common.cli import UserError

MARKER = ".digit-serving"
MARKER_TEXT = (
    "This folder was created by digit-serving, which may replace or remove what it wrote here.\n"
)


def is_owned(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def holds_files(path: Path) -> bool:
    """Whether anything but folders lies under `path` (stops at the first such entry)."""
    return any(entry.is_symlink() or not entry.is_dir() for entry in Path(path).rglob("*"))


def check_claimable(path: Path) -> None:
    """UserError unless `path` is free, a folder holding no file, or a folder of ours
    (writes nothing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    if path.is_dir() and not is_owned(path) and holds_files(path):
        raise UserError(
            f"{path}: folder exists and was not created by digit-serving (no {MARKER} marker); "
            "nothing in it is touched: choose another path"
        )


def claim_folder(path: Path) -> Path:
    """`path` as a folder of ours: created and marked, or already ours (or empty)."""
    path = Path(path)
    check_claimable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not is_owned(path):
            (path / MARKER).write_text(MARKER_TEXT)
    except OSError as error:
        raise UserError(
            f"{path}: not writable: cannot create the folder ({error.strerror or error})"
        ) from None
    return path


def remove_owned(path: Path) -> None:
    """Delete a folder of ours with everything in it; a foreign one is refused (UserError)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir() or not is_owned(path):
        raise UserError(
            f"{path}: not removed: it was not created by digit-serving (no {MARKER} marker)"
        )
    shutil.rmtree(path)


def release_folder(path: Path) -> None:
    """Remove a folder of ours if nothing but its marker is left in it; else leave it as is."""
    path = Path(path)
    if is_owned(path) and [entry.name for entry in path.iterdir()] == [MARKER]:
        (path / MARKER).unlink()
        path.rmdir()
