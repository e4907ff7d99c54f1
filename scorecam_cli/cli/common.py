"""What the ``scorecam`` commands share: the mapping of the library's one-line errors to exit
codes, and option groups that reach a command as frozen specs. Click only; nothing here imports
torch (the library is imported inside commands)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A one-line error about what the user asked for (exit code 2)."""

    exit_code = 2


class Fatal(click.ClickException):
    """A one-line error that stops the run (exit code 1)."""

    exit_code = 1


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's one-line errors into Click exits: 2 for what cannot be done as asked
    (:class:`~scorecam_cli.errors.BadRequest`), 1 otherwise."""
    from scorecam_cli.errors import BadRequest, ScoreCamError

    try:
        yield
    except BadRequest as exc:
        raise UsageFailure(str(exc)) from None
    except (ScoreCamError, ValueError) as exc:
        raise Fatal(str(exc)) from None


def option_group(
    build: Callable[..., dict[str, Any]], options: Sequence[Callable[[F], F]]
) -> Callable[[F], F]:
    """Click ``options`` whose values reach the command as the arguments ``build(**values)``
    returns (frozen specs), instead of one loose argument each."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return function(*args, **kwargs, **build(**values))

        before = len(getattr(command, "__click_params__", []))
        for option in reversed(options):
            command = option(command)
        names = [param.name for param in command.__click_params__[before:]]  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return decorate
