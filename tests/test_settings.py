"""common.settings: one declaration gives the flag, its default, its check and its twin."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from common.cli import UserError, positive_int
from common.settings import comma_list, parse_settings, setting, settings_group


@dataclass(frozen=True)
class Inner:
    stages: int = setting(2, "stages", parse=positive_int)
    hidden: float = 0.5  # a plain value: no flag


@dataclass(frozen=True)
class Example:
    port: int = setting(8500, "a port", parse=positive_int)
    names: tuple[str, ...] = setting((), "names", parse=comma_list)
    color: str = setting("red", "a colour", choices=("red", "blue"))
    batching: bool = setting(True, "batching")
    verbose: bool = setting(False, "chatty")
    note: tuple[str, ...] = setting((), "a note", many=True)
    folder: Path = setting(Path("out"), "where", parse=Path, flag="--output")
    inner: Inner = Inner()
    flat: Inner = settings_group(Inner(), prefix="flat_")


def parse(argv: list[str], environ: dict | None = None) -> Example:
    return parse_settings(Example(), "example", "an example", argv, "EX_", environ or {})


def test_defaults_flags_and_environment_twins():
    assert parse([]) == Example()
    changed = parse(
        ["--port", "9", "--names", "a, b", "--no-batching", "--verbose", "--note", "x",
         "--note", "y", "--output", "o", "--inner-stages", "5", "--flat-stages", "7"]
    )  # fmt: skip
    assert changed.port == 9 and changed.names == ("a", "b") and changed.note == ("x", "y")
    assert changed.batching is False and changed.verbose is True
    assert changed.folder == Path("o") and changed.inner == Inner(stages=5)
    assert changed.flat.stages == 7 and changed.inner.hidden == 0.5
    environ = {"EX_PORT": "7", "EX_BATCHING": "false", "EX_INNER_STAGES": "3", "EX_COLOR": "blue"}
    from_env = parse([], environ)
    assert (from_env.port, from_env.batching, from_env.inner.stages) == (7, False, 3)
    assert from_env.color == "blue"
    assert parse(["--port", "8"], environ).port == 8  # the flag wins


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (["--port", "0"], {}, "--port"),
        (["--color", "green"], {}, "--color"),
        ([], {"EX_PORT": "-1"}, "EX_PORT='-1' (--port)"),
        ([], {"EX_COLOR": "green"}, "EX_COLOR='green' (--color): choose from red, blue"),
        ([], {"EX_BATCHING": "maybe"}, "EX_BATCHING"),
    ],
)
def test_bad_values_name_the_flag_or_variable(argv, environ, fragment):
    with pytest.raises(UserError, match=None) as raised:
        parse(argv, environ)
    assert fragment in str(raised.value)


def test_help_shows_each_default_and_twin(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a port [EX_PORT; default 8500]" in text
    assert "--no-batching batching [EX_BATCHING; default on]" in text
    assert "--inner-stages N stages [EX_INNER_STAGES; default 2]" in text
    assert "hidden" not in text
