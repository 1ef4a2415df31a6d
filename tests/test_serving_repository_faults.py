"""A bad version never takes traffic and never freezes reloading (issue 11, items 3-6)."""

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

from common.repository import METADATA_FILE
from serving.client import DigitClient
from tests.serving_support import (
    ROOT,
    ServerThread,
    add_version,
    digit_pixels,
    server_config,
)
from tests.test_serving_process import assert_one_line_error
from tests.test_serving_reload import wait_until


@pytest.fixture
def repository(serving_repository, tmp_path):
    return shutil.copytree(serving_repository, tmp_path / "model_repository")


def edit_metadata(version_folder, change) -> None:
    path = version_folder / METADATA_FILE
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps(change(metadata)))


def refused(server: ServerThread, model: str) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "digits_model_versions_refused_total", {"model": model}
    )
    return value or 0.0


def served_versions(client: DigitClient, model: str) -> list[int]:
    return list(client.get_model_metadata(model).versions)


def publish_broken(repository, model: str, breaker) -> int:
    """A copy of the newest version, broken by `breaker(folder)`, published atomically."""
    version = add_version(repository, model)
    folder = repository / model / str(version)
    hidden = folder.with_name(f".broken-{version}")
    folder.rename(hidden)
    breaker(hidden)
    hidden.rename(folder)
    return version


def fewer_classes(folder) -> None:
    edit_metadata(folder, lambda m: {**m, "classes": ["0", "1"]})


def metadata_not_an_object(folder) -> None:
    (folder / METADATA_FILE).write_text("[]")


def variables_changed(folder) -> None:
    """A SavedModel file whose bytes no longer match the sha256 in metadata.json."""
    variables = next(p for p in (folder / "variables").iterdir() if p.name.endswith("index"))
    variables.write_bytes(variables.read_bytes() + b"\0")


def metadata_missing(folder) -> None:
    (folder / METADATA_FILE).unlink()


@pytest.mark.parametrize(
    "breaker",
    [fewer_classes, metadata_not_an_object, variables_changed, metadata_missing],
)
def test_a_bad_version_is_refused_and_the_previous_one_keeps_serving(repository, breaker):
    with ServerThread(server_config(repository)) as server, DigitClient(server.target) as client:
        publish_broken(repository, "scratch_cnn", breaker)
        server.call(server.server.registry.refresh())
        reply = client.classify("scratch_cnn", [digit_pixels(0)])
        assert reply.version == 1 and len(reply.predictions[0].probabilities) == 3
        assert served_versions(client, "scratch_cnn") == [1]
        assert refused(server, "scratch_cnn") == 1
        server.call(server.server.registry.refresh())  # unchanged files: not tried again
        assert refused(server, "scratch_cnn") == 1


def test_one_malformed_entry_never_stops_reloading_the_others(repository):
    (repository / "scratch_cnn" / "²").mkdir()  # isdigit() is true, int() fails
    (repository / "scratch_cnn" / "01").mkdir()  # not how export names a version
    publish_broken(repository, "second_cnn", metadata_not_an_object)
    with ServerThread(server_config(repository)) as server, DigitClient(server.target) as client:
        assert served_versions(client, "second_cnn") == [1]
        assert add_version(repository, "scratch_cnn") == 2
        assert add_version(repository, "second_cnn", source=1) == 3
        server.call(server.server.registry.refresh())
        assert served_versions(client, "scratch_cnn") == [1, 2]
        assert served_versions(client, "second_cnn") == [1, 3]
        assert client.classify("second_cnn", [digit_pixels(1)]).version == 3


def test_a_failed_version_does_not_unload_the_rollback_version(repository):
    config = server_config(repository, keep_versions=2)
    add_version(repository, "scratch_cnn")
    with ServerThread(config) as server, DigitClient(server.target) as client:
        assert served_versions(client, "scratch_cnn") == [1, 2]
        publish_broken(repository, "scratch_cnn", fewer_classes)
        server.call(server.server.registry.refresh())
        assert served_versions(client, "scratch_cnn") == [1, 2]


def test_a_version_copied_in_slowly_loads_once_complete(repository):
    """`cp -r` into the repository: the folder exists long before its files are all there."""
    source = repository / "scratch_cnn" / "1"
    target = repository / "scratch_cnn" / "2"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != METADATA_FILE)  # metadata first: the worst order
    config = server_config(repository, poll_seconds=0.1)
    with ServerThread(config) as server, DigitClient(server.target) as client:
        for path in files:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            with open(destination, "wb") as handle:  # in two halves, with polls between
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(0.25)
                handle.write(data[len(data) // 2 :])
            time.sleep(0.25)
            if path != files[-1]:
                assert served_versions(client, "scratch_cnn") == [1]
        wait_until(lambda: served_versions(client, "scratch_cnn") == [1, 2])
        assert client.classify("scratch_cnn", [digit_pixels(3)]).version == 2
        assert refused(server, "scratch_cnn") >= 1  # seen incomplete, tried again


def test_start_up_serves_the_good_models_beside_a_broken_one(repository):
    metadata = repository / "second_cnn" / "1" / METADATA_FILE
    good = metadata.read_text()
    metadata_not_an_object(metadata.parent)  # its only version
    (repository / "scratch_cnn" / "²").mkdir()
    with ServerThread(server_config(repository)) as server, DigitClient(server.target) as client:
        assert [m.name for m in client.list_models()] == ["scratch_cnn"]
        metadata.write_text(good)  # mended: picked up by the next poll
        server.call(server.server.registry.refresh())
        assert [m.name for m in client.list_models()] == ["scratch_cnn", "second_cnn"]


def test_start_up_with_no_loadable_version_is_one_line(repository):
    for model in ("scratch_cnn", "second_cnn"):
        metadata_not_an_object(repository / model / "1")
    (repository / "scratch_cnn" / "²").mkdir()
    ports = ("--port", "0", "--metrics-port", "0", "--http-port", "0")
    result = subprocess.run(
        [sys.executable, "-m", "serving", "--model-repository", str(repository), *ports],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, "no loadable version")


def test_a_version_folder_of_odd_entries_is_refused_alone(repository):
    """metadata.json as a folder, a version that is a file: each refused, nothing stops."""
    publish_broken(repository, "scratch_cnn", lambda f: metadata_as_folder(f))
    (repository / "second_cnn" / "7").write_text("a file where a version folder would be")
    with ServerThread(server_config(repository)) as server, DigitClient(server.target) as client:
        assert served_versions(client, "scratch_cnn") == [1]
        assert add_version(repository, "second_cnn") == 2
        server.call(server.server.registry.refresh())
        assert served_versions(client, "second_cnn") == [1, 2]


def metadata_as_folder(folder) -> None:
    (folder / METADATA_FILE).unlink()
    (folder / METADATA_FILE).mkdir()


def test_watch_keeps_polling_while_versions_fail(repository):
    """The real poll loop: a broken version, then a good one, both within a few polls."""
    config = server_config(repository, poll_seconds=0.1)
    with ServerThread(config) as server, DigitClient(server.target) as client:
        publish_broken(repository, "scratch_cnn", fewer_classes)
        wait_until(lambda: refused(server, "scratch_cnn") == 1)
        assert add_version(repository, "scratch_cnn", source=1) == 3
        wait_until(lambda: served_versions(client, "scratch_cnn") == [1, 3])
        assert threading.active_count() < 100


def test_metadata_fields_of_the_wrong_type_never_break_metadata_calls(repository):
    """val_accuracy and backbone are optional descriptions: a wrong type is not served as is."""
    with ServerThread(server_config(repository)) as server, DigitClient(server.target) as client:
        odd = publish_broken(
            repository,
            "scratch_cnn",
            lambda f: edit_metadata(f, lambda m: {**m, "val_accuracy": "high", "backbone": 42}),
        )
        server.call(server.server.registry.refresh())
        metadata = client.get_model_metadata("scratch_cnn")
        assert metadata.version == odd and metadata.val_accuracy == 0.0 and metadata.backbone == ""
        assert len(client.list_models()) == 2
