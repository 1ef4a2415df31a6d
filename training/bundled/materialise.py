"""Write the bundled digits 0/1/2 as a Hand_written_digits folder of 100x100 PNGs (once).

Training then reads that folder through exactly the code path a user's --data-dir takes.
"""

import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import UserError
from common.contract import CLASS_FOLDERS, DATASET_FOLDER
from common.images import to_model_pixels
from common.ownership import claim_folder, remove_owned

ARCHIVE = Path(__file__).with_name("mnist_digits.npz")
COMPLETE_MARKER = ".complete"
PARTIAL_PREFIX = f"{DATASET_FOLDER}.partial-"  # + host-pid: one per writing process


def load_bundled(digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 28, 28] samples and their digit labels, for the digits asked for."""
    with np.load(ARCHIVE) as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    keep = np.isin(labels, digits)
    return images[keep], labels[keep]


def materialise_bundled_digits(cache_dir: Path) -> Path:
    """cache_dir/Hand_written_digits with 0_digits, 1_digits, 2_digits; built once.

    A folder of that name that this package did not write (a user's own digits, say) is
    never replaced: the run stops with one line naming it.
    """
    target = Path(cache_dir) / DATASET_FOLDER
    if (target / COMPLETE_MARKER).is_file():  # written by this function (last step below)
        return target
    if target.exists():
        raise UserError(
            f"{target}: exists and was not written by digit-serving; it is left untouched: "
            f"train on it with --data-dir {target}, or pass another --cache-dir"
        )
    remove_abandoned_partials(target)
    partial = target.with_name(f"{PARTIAL_PREFIX}{socket.gethostname()}-{os.getpid()}")
    claim_folder(partial)
    images, labels = load_bundled(tuple(range(len(CLASS_FOLDERS))))
    for digit, folder in enumerate(CLASS_FOLDERS):
        (partial / folder).mkdir()
        for index, sample in enumerate(images[labels == digit]):
            pixels = to_model_pixels(Image.fromarray(sample, mode="L"))
            Image.fromarray(pixels, mode="L").save(partial / folder / f"{digit}_{index:04d}.png")
    (partial / COMPLETE_MARKER).write_text("written by training.bundled.materialise\n")
    try:
        partial.rename(target)  # atomic; fails if another process (a worker) got there first
    except OSError:
        if not (target / COMPLETE_MARKER).is_file():
            raise
        remove_owned(partial)
    return target


def remove_abandoned_partials(target: Path) -> None:
    """Folders of ours left by interrupted writes on this host (their process is gone);
    another process's write in progress is left alone."""
    prefix = f"{PARTIAL_PREFIX}{socket.gethostname()}-"
    for partial in target.parent.glob(prefix + "*"):
        pid = partial.name.removeprefix(prefix)
        if pid.isdigit() and not process_alive(int(pid)):
            remove_owned(partial)  # refused (one line) if it is not ours


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
