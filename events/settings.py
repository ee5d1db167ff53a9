"""The base of every component's settings: a bad ``IOC_*`` value is one clear line.

pydantic-settings reports a malformed environment variable as a ``ValidationError`` (or,
for a JSON-valued field, a ``SettingsError``) of a dozen lines, under the field's Python
name and with a link to its documentation. An operator who typed ``IOC_WS_PORT=80a`` wants
to read the variable back, what it held and what is expected. :class:`IocSettings` turns
both into :class:`~events.errors.ConfigurationError`, whose message names each offending
variable; every entry point prints that message as one line and exits with status 2
(:func:`exit_on_error`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsError

from events.errors import ConfigurationError, IocError


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` (its first alias if it has one)."""
    info: FieldInfo | None = cls.model_fields.get(field)
    if info is None:  # the error names an alias: that is the variable already
        return field.upper()
    alias = info.validation_alias or info.alias
    if isinstance(alias, str):
        return alias.upper()
    if isinstance(alias, AliasChoices) and alias.choices and isinstance(alias.choices[0], str):
        return alias.choices[0].upper()
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line: every offending variable, what it held and what is wrong."""
    parts = []
    named = False
    for error in exc.errors():
        loc = error.get("loc") or ()
        if not loc:  # a check of several settings together: its message names them
            parts.append(str(error.get("msg", "invalid")).removeprefix("Value error, "))
            continue
        named = True
        name = env_name(cls, str(loc[0]))
        where = name + "".join(f"[{p}]" for p in loc[1:])
        held = "" if error.get("type") == "missing" else f"={_shown(error.get('input'))}"
        parts.append(f"{where}{held}: {error.get('msg', 'invalid')}")
    return ("bad setting " if named else "bad settings: ") + "; ".join(parts)


class IocSettings(BaseSettings):
    """``BaseSettings`` whose validation errors are :class:`ConfigurationError`."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(describe(type(self), exc)) from None
        except SettingsError as exc:  # a JSON-valued variable that is not JSON
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            raise ConfigurationError(f"bad setting: {exc}{cause}") from None


@contextmanager
def exit_on_error(component: str) -> Iterator[None]:
    """Around a component's entry point: our own errors end it with one line on stderr and
    status 2 (the supervisor and the operator read the line; a traceback hides it)."""
    try:
        yield
    except IocError as exc:
        print(f"{component}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


__all__ = ["IocSettings", "describe", "env_name", "exit_on_error"]
