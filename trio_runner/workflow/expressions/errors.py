"""The one error type of the expression language."""

from __future__ import annotations

from trio_runner.errors import RunnerError

# Long texts (a whole run: script) are cut in messages; the position still locates the problem.
_SHOWN_CHARS = 200


class ExpressionError(RunnerError):
    """A template or expression that cannot be parsed or evaluated.

    The message names the problem, its 1-based column (when known) and the
    expression text as written in the workflow; evaluated values (which may hold
    secrets) never appear in it.
    """

    def __init__(self, description: str, expression: str, position: int | None = None) -> None:
        self.description = description
        self.expression = expression
        self.position = position
        shown = expression if len(expression) <= _SHOWN_CHARS else expression[:_SHOWN_CHARS] + "..."
        if position is None:
            message = f"{description}. Expression: {shown}"
        else:
            message = f"{description}. Located at position {position} within expression: {shown}"
        super().__init__(message)
