"""A command's settings, declared once: on the fields of its frozen dataclass.

    @dataclass(frozen=True)
    class ServerConfig:
        port: int = setting(8500, "gRPC port (0: any free port)", parse=non_negative_int)

From that one declaration come the command-line flag (`--port`), its `--help` line with the
default, its check (a bad value is one line on stderr, see common.cli), and, where the
command asks for them, an environment twin (`DIGITS_PORT`; the flag wins). A boolean
setting is a switch: `--name` when it defaults to False, `--no-name` when it defaults to
True. A field holding another settings dataclass adds that one's settings with its name as
prefix (`pretrain.stages` is `--pretrain-stages`). Fields without `setting()` are plain
values a command does not expose.
"""

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.cli import ArgumentParser, UserError

_KEY = "setting"
_GROUP = "settings group"


@dataclasses.dataclass(frozen=True)
class _Declaration:
    help: str
    parse: Callable[[str], Any] | None
    choices: tuple | None
    flag: str | None
    metavar: str | None
    show: Callable[[Any], str] | None
    positional: bool
    env: str | None
    required: bool
    many: bool


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    show: Callable[[Any], str] | None = None,
    positional: bool = False,
    env: str | None = None,
    required: bool = False,
    many: bool = False,
) -> Any:
    """A dataclass field that is also a command-line setting (see the module docstring);
    `show` writes the default for --help as it is written on the command line; a
    `positional` setting is an argument without a flag (optional when it has a default);
    `env` names the environment twin where it is not the command's prefix + the field's
    name; a `required`
    flag has no default; a `many` positional takes one or more values, a `many` flag may be
    repeated (either way the field holds a tuple)."""
    choices = tuple(choices) if choices else None
    declaration = _Declaration(
        help, parse, choices, flag, metavar, show, positional, env, required, many
    )
    return dataclasses.field(default=default, metadata={_KEY: declaration})


def settings_group(default: Any, prefix: str | None = None) -> Any:
    """A field holding another settings dataclass; its flags take `prefix` (default: the
    field's name and a dash; "" for none)."""
    return dataclasses.field(default=default, metadata={_GROUP: prefix})


def comma_list(text: str) -> tuple[str, ...]:
    """ "a, b,c" -> ("a", "b", "c"): how list settings are written on the command line."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def positive_ints(text: str) -> tuple[int, ...]:
    """ "1,4,16" -> (1, 4, 16); every value a positive integer."""
    try:
        values = tuple(int(part) for part in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def boolean(text: str) -> bool:
    """An environment variable's switch value."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false, 1/0)")


def _shown(value: Any) -> str:
    if value is None or value in ((), ""):
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _metavar(name: str, declaration: _Declaration, default: Any) -> str | None:
    """What the --help line shows after the flag."""
    if declaration.metavar or declaration.choices:
        return declaration.metavar
    if name.endswith("port"):
        return "PORT"
    if isinstance(default, int | float):
        return "N"
    if isinstance(default, tuple):
        return "A,B"
    return "PATH" if declaration.parse is Path or isinstance(default, Path) else "TEXT"


def _group_prefix(field: dataclasses.Field, value: Any, name: str) -> str | None:
    """The flag prefix of a nested settings dataclass; None for any other field."""
    if _KEY in field.metadata or not dataclasses.is_dataclass(value):
        return None
    prefix = field.metadata.get(_GROUP)
    return name + "_" if prefix is None else prefix


def add_settings(
    parser: argparse.ArgumentParser,
    defaults: Any,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
    name_prefix: str = "",
) -> None:
    """Add a flag for every setting of the dataclass instance `defaults` (its values are the
    defaults); with `env_prefix`, each flag's environment twin sets its default."""
    for field in dataclasses.fields(defaults):
        value = getattr(defaults, field.name)
        name = name_prefix + field.name
        group = _group_prefix(field, value, name)
        if group is not None:
            add_settings(parser, value, env_prefix, environ, group)
            continue
        declaration = field.metadata.get(_KEY)
        if declaration is None:
            continue
        env = None
        if env_prefix is not None:
            env = declaration.env or f"{env_prefix}{name.upper()}"
        _add_flag(parser, name, declaration, value, env, environ or {})


def _add_flag(parser, name, declaration: _Declaration, default, env, environ) -> None:
    switch = isinstance(default, bool)
    dashed = name.replace("_", "-")
    flag = declaration.flag or (f"--no-{dashed}" if switch and default else f"--{dashed}")
    shown = (declaration.show or _shown)(default)
    if switch:
        shown = "on" if default else "off"
    twin = f"{env}; " if env else ""
    text = (
        f"{declaration.help} [{twin}{'required' if declaration.required else 'default ' + shown}]"
    )
    if env and environ.get(env):
        parse = boolean if switch else declaration.parse or str
        try:
            default = parse(environ[env])
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise UserError(f"{env}={environ[env]!r} ({flag}): {error}") from None
        if declaration.choices and default not in declaration.choices:
            choices = ", ".join(declaration.choices)
            raise UserError(f"{env}={environ[env]!r} ({flag}): choose from {choices}")
    if declaration.positional:
        optional = default is not None and not declaration.many
        parser.add_argument(
            name,
            type=declaration.parse,
            nargs="+" if declaration.many else "?" if optional else None,
            default=default,
            metavar=declaration.metavar,
            help=f"{declaration.help} [default {shown}]" if optional else declaration.help,
        )
        return
    if declaration.many:
        parser.add_argument(flag, dest=name, action="append", type=declaration.parse, help=text)
        return
    if switch:
        action = "store_false" if flag.startswith("--no-") else "store_true"
        parser.add_argument(flag, dest=name, action=action, default=default, help=text)
        return
    parser.add_argument(
        flag,
        dest=name,
        type=declaration.parse,
        choices=declaration.choices,
        default=default,
        required=declaration.required,
        metavar=_metavar(name, declaration, default),
        help=text,
    )


def settings_from(args: argparse.Namespace, defaults: Any, name_prefix: str = "") -> Any:
    """A copy of the dataclass instance `defaults` with every setting parsed into `args`."""
    changes = {}
    for field in dataclasses.fields(defaults):
        value, name = getattr(defaults, field.name), name_prefix + field.name
        group = _group_prefix(field, value, name)
        if group is not None:
            changes[field.name] = settings_from(args, value, group)
        elif _KEY in field.metadata:
            value = getattr(args, name)
            if isinstance(value, list):
                value = tuple(value)
            changes[field.name] = (
                value if value is not None or not field.metadata[_KEY].many else ()
            )
    return dataclasses.replace(defaults, **changes)


def parse_settings(
    defaults: Any,
    prog: str,
    description: str,
    argv: Sequence[str] | None = None,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The command's settings: flags, then environment twins, then `defaults`."""
    parser = ArgumentParser(prog=prog, description=description)
    add_settings(parser, defaults, env_prefix, environ)
    return settings_from(parser.parse_args(argv), defaults)
