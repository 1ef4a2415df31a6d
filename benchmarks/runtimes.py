"""The published versions to measure, and the two ONNX Runtime session variants timed."""

from pathlib import Path

from common.cli import UserError
from common.model_runtime import (
    Predict,
    ProviderChoice,
    server_session_options,
    session_predict,
)
from common.model_runtime import session_options as plain_session_options
from common.repository import ONNX_FILE, latest_version, list_models, version_dir

# Raw ONNX Runtime is timed twice: with its own defaults (busy-waiting threads) and with the
# server's session options (threads spin within a run only); the better of the two at each
# batch is the ceiling.
DEFAULTS, SERVER_OPTIONS = "defaults", "server_options"
ORT_VARIANTS = (DEFAULTS, SERVER_OPTIONS)


def resolve_models(repository: Path, requested: list[str] | None) -> dict[str, Path]:
    """{model: newest version folder} for the requested models (default: all in the repository)."""
    repository = Path(repository)
    if not repository.is_dir():
        raise UserError(f"model repository not found: {repository} (train and export first)")
    available = list_models(repository)
    names = requested or available
    missing = [name for name in names if name not in available]
    if missing:
        raise UserError(f"model(s) {', '.join(missing)} not in {repository} (has: {available})")
    if not names:
        raise UserError(f"no published model in {repository}")
    return {
        name: version_dir(repository, name, latest_version(repository / name)) for name in names
    }


def session_options(variant: str):
    """ONNX Runtime's own defaults, or exactly the options the server uses."""
    return server_session_options(0) if variant == SERVER_OPTIONS else plain_session_options()


def onnx_predict(
    version_path: Path, provider: str = "auto", variant: str = DEFAULTS
) -> tuple[Predict, str]:
    """(predict function, the provider that runs it) for a version's model.onnx."""
    choice = ProviderChoice(provider)
    session = choice.create_session(Path(version_path) / ONNX_FILE, session_options(variant))
    return session_predict(session), session.get_providers()[0]
