"""Nothing the package did not create is deleted, moved or overwritten (issue 11, items 1-2)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.cli import UserError
from common.ownership import MARKER, claim_folder, release_folder, remove_owned
from tests.test_training import REPO, assert_one_line_error, tiny_config
from training.bundled.materialise import PARTIAL_PREFIX, materialise_bundled_digits
from training.run import run


def training_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m training.run` run from `cwd`, so its default ./data is cwd/data."""
    return subprocess.run(
        [sys.executable, "-m", "training.run", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def users_dataset(root: Path) -> Path:
    scan = root / "data" / "Hand_written_digits" / "0_digits" / "my_scan.png"
    scan.parent.mkdir(parents=True)
    scan.write_text("mine")
    return scan


def test_users_dataset_in_the_default_data_folder_survives_a_failing_run(tmp_path):
    scan = users_dataset(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder")
    result = training_cli(tmp_path, "--output", "afile")
    assert_one_line_error(result, "afile", "not a folder")
    assert scan.read_text() == "mine"


def test_users_dataset_in_the_default_data_folder_is_never_replaced(tmp_path):
    scan = users_dataset(tmp_path)
    result = training_cli(tmp_path, "--output", "out", "--no-export")
    assert_one_line_error(result, "data/Hand_written_digits", "--data-dir")
    assert scan.read_text() == "mine"
    assert sorted(p.name for p in scan.parent.parent.iterdir()) == ["0_digits"]


def test_foreign_partial_folder_is_refused(tmp_path):
    """A folder named like an abandoned write of ours (this host, a process that is gone)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    partial = tmp_path / f"{PARTIAL_PREFIX}{socket.gethostname()}-{gone}"
    partial.mkdir()
    (partial / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not created by digit-serving"):
        materialise_bundled_digits(tmp_path)
    assert (partial / "keep.txt").read_text() == "mine"


def test_foreign_output_folder_is_refused_before_any_work(tmp_path):
    output = tmp_path / "results"
    output.mkdir()
    (output / "metrics.json").write_text("my own metrics")
    result = training_cli(tmp_path, "--output", "results", "--cache-dir", "cache")
    assert_one_line_error(result, "results", "not created by digit-serving")
    assert (output / "metrics.json").read_text() == "my own metrics"
    assert not (tmp_path / "cache").exists()  # nothing was written: the output came first


def test_users_file_in_checkpoints_survives_a_training_run(tmp_path):
    from tests.test_data import write_digit_folder

    write_digit_folder(tmp_path / "Hand_written_digits")
    config = tiny_config(tmp_path, models=("scratch_cnn",))
    claim_folder(config.output_dir)  # as an interrupted earlier run left them
    claim_folder(config.output_dir / "checkpoints")
    note = config.output_dir / "checkpoints" / "my_notes.txt"
    note.write_text("mine")
    run(config)
    assert note.read_text() == "mine"
    assert not (note.parent / "scratch_cnn").exists()  # its own checkpoints are cleaned up


def test_foreign_checkpoint_folder_of_a_model_is_refused(tmp_path):
    from tests.test_data import write_digit_folder

    write_digit_folder(tmp_path / "Hand_written_digits")
    config = tiny_config(tmp_path, models=("scratch_cnn",))
    claim_folder(config.output_dir)
    claim_folder(config.output_dir / "checkpoints")
    foreign = config.output_dir / "checkpoints" / "scratch_cnn" / "weights.h5"
    foreign.parent.mkdir()
    foreign.write_text("someone else's")
    with pytest.raises(UserError, match="not created by digit-serving"):
        run(config)
    assert foreign.read_text() == "someone else's"


def test_claim_remove_release(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_folder(empty) == empty and (empty / MARKER).is_file()  # empty: taken over
    (empty / "ours.txt").write_text("x")
    release_folder(empty)
    assert empty.is_dir()  # not only the marker left: kept
    remove_owned(empty)
    assert not empty.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "theirs").write_text("x")
    with pytest.raises(UserError, match="not removed"):
        remove_owned(foreign)
    assert (foreign / "theirs").is_file()
    claim_folder(tmp_path / "new" / "deep")
    release_folder(tmp_path / "new" / "deep")
    assert not (tmp_path / "new" / "deep").exists()


def test_folder_of_empty_folders_is_taken_over_but_not_one_holding_a_file(tmp_path):
    """An output folder holding only the mount point of another volume (Kubernetes mounts
    the model repository at OUTPUT/model_repository) destroys nothing when written into."""
    output = tmp_path / "artifacts"
    (output / "model_repository").mkdir(parents=True)
    assert claim_folder(output) == output and (output / MARKER).is_file()
    foreign = tmp_path / "foreign"
    (foreign / "deep" / "deeper").mkdir(parents=True)
    (foreign / "deep" / "deeper" / "scan.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not created by digit-serving"):
        claim_folder(foreign)
    assert not (foreign / MARKER).exists()


def test_workers_sharing_a_cache_folder_write_the_bundled_digits_once(tmp_path):
    """Two processes (the workers of a multi-worker run on one machine) materialise at once:
    both get the complete folder, and no partial folder is left."""
    code = (
        "import sys; from pathlib import Path; "
        "from training.bundled.materialise import materialise_bundled_digits as m; "
        "print(m(Path(sys.argv[1])))"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    results = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], results
    target = tmp_path / "Hand_written_digits"
    assert {out.strip() for out, _ in results} == {str(target)}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["Hand_written_digits"]
    assert (target / ".complete").is_file()
    assert sum(1 for _ in target.rglob("*.png")) > 2000
