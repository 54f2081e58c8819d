"""Errors a user can meet. Each carries a one-line sentence that says what to fix."""


class PgwardenError(Exception):
    """Base of every error pgwarden raises on purpose."""


class ConfigError(PgwardenError):
    """The configuration is invalid. `key` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class DCSError(PgwardenError):
    """The DCS could not be reached or did not answer within its timeout."""


class PostgresError(PgwardenError):
    """A PostgreSQL operation failed; the message says which and why."""
