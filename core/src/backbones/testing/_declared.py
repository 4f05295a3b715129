"""The rule every declared test class of the kit follows: a check its declaration does not ask for is not there."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["declare_checks"]


def declare_checks(cls: type, base: type, wanted: Mapping[str, bool], keep_own: bool = False) -> None:
    """Switch the generated checks of the declaration ``cls`` (a subclass of ``base``) on or off.

    A check that is not wanted is set to ``None``, so pytest collects nothing (rather than a skipped test); a
    wanted check that a parent declaration switched off is put back from ``base``.

    Args:
        cls: The declaring class, from its ``__init_subclass__``.
        base: The kit class that defines the checks.
        wanted: Check method name -> whether the declaration asks for it.
        keep_own: Keep a method ``cls`` defines or inherits other than ``base``'s, wanted or not (a plugin's
            own test of the same name).
    """
    for name, on in wanted.items():
        generic = getattr(base, name)
        if not on and (not keep_own or getattr(cls, name) is generic):
            setattr(cls, name, None)
        elif on and getattr(cls, name) is None:
            setattr(cls, name, generic)
