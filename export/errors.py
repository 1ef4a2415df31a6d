"""Why an export refused to publish: each is a user-facing, one-line error."""

from common.cli import UserError


class ExportError(UserError):
    """Nothing was published (the message names the file or the failed check)."""


class ContractError(ExportError):
    """The model's input or output does not match the contract."""


class ForbiddenOpError(ExportError):
    """A served graph contains random or augmentation ops (the message lists them)."""


class EqualityError(ExportError):
    """The formats disagree beyond tolerance (the message says by how much)."""
