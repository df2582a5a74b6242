"""Errors that carry a message for the user: what went wrong and what to change."""


class UserError(Exception):
    """Bad input or environment the user can fix; the CLI prints the message without a trace."""
