"""Checks of a method's options (its ``*Options`` dataclass, built from ``--option KEY=VALUE`` or a run's
``config.yaml``): each raises one :class:`TenshotError` line naming the method, the option and what it needs."""

from __future__ import annotations

import math

from ..errors import TenshotError

ADAPTERS = ("full", "lora")  # what of the UNet trains: every weight, or a LoRA on it


def _fail(options, name: str, needs: str) -> None:
    raise TenshotError(f"{options.method} {name} must be {needs}, got {getattr(options, name)!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_choices(options, **allowed: tuple) -> None:
    """Each named option is one of its allowed values (None passes where None is among them)."""
    for name, values in allowed.items():
        if getattr(options, name) not in values:
            _fail(options, name, "one of " + ", ".join(str(value) for value in values if value is not None))


def check_integers(options, minimum: int, *names: str, maximum: int | None = None) -> None:
    """Each named option is an integer in ``[minimum, maximum]``."""
    for name in names:
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum is not None and value > maximum):
            _fail(options, name, f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]")


def check_numbers(options, *names: str, positive: bool = False, optional: bool = False) -> None:
    """Each named option is a finite number >= 0 (> 0 with ``positive``; None passes with ``optional``)."""
    for name in names:
        value = getattr(options, name)
        if optional and value is None:
            continue
        if not _is_number(value) or value < 0 or (positive and value == 0):
            _fail(options, name, "a positive number" if positive else "a number >= 0")


def check_flags(options, *names: str) -> None:
    """Each named option is true or false."""
    for name in names:
        if not isinstance(getattr(options, name), bool):
            _fail(options, name, "true or false")


def check_adapter(options) -> None:
    """``adapter`` is full or lora and ``rank`` an integer >= 1 (:func:`tenshot.methods.base.make_trainable`)."""
    check_choices(options, adapter=ADAPTERS)
    check_integers(options, 1, "rank")
