"""A config class's refusals, declared as a table: each bad value must raise a ConfigError with its message."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest

from .. import BackboneConfig, ConfigError
from ._declared import declare_checks

__all__ = ["ConfigErrors"]


class ConfigErrors:
    """Config errors, declared once. Subclass it as ``Test<Name>ConfigErrors``::

        class TestDinov3ViTConfigErrors(ConfigErrors):
            config_class = Dinov3ViTConfig
            config = TINY
            errors = {"heads": ({"num_attention_heads": 3}, r"num_attention_heads=3 does not divide hidden_size=16")}
            invalid_values = (("pos_embed_jitter", 0.5, "greater than or equal to 1"),)

    Generated checks (each is there only when its table has an entry):

    * ``test_bad_config_is_refused``, per entry of ``errors`` (argument ``config_error``, named by the entry's
      key): ``config_class(**{**config, **overrides})`` raises a :class:`~backbones.ConfigError` whose message
      matches the entry's regular expression (``re.search``).
    * ``test_invalid_value_names_the_field_and_range``, per entry of ``invalid_values`` (argument
      ``invalid_value``): the field-level refusal of a value, whose message is
      ``invalid <config class name>: <field>=<repr(value)>: Input should be <expected>``.

    Class attributes:
        config_class: The config class.
        config: Valid config arguments every entry's overrides apply to.
        errors: Case name -> ``(overrides, message)``: the config arguments that replace ``config``'s and a
            regular expression the error message must match.
        invalid_values: ``(field, value, expected)``: a value the field's own constraint refuses, and the
            constraint as the message states it after ``Input should be`` (e.g. ``"greater than or equal to 1"``).
    """

    config_class: ClassVar[type[BackboneConfig]]
    config: ClassVar[dict[str, Any]] = {}
    errors: ClassVar[dict[str, tuple[dict[str, Any], str]]] = {}
    invalid_values: ClassVar[tuple[tuple[str, Any, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A check whose table is empty is not there at all (rather than parametrised over nothing).
        wanted = {
            "test_bad_config_is_refused": bool(cls.errors),
            "test_invalid_value_names_the_field_and_range": bool(cls.invalid_values),
        }
        declare_checks(cls, ConfigErrors, wanted)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the checks from the tables."""
        if "config_error" in metafunc.fixturenames:
            metafunc.parametrize("config_error", list(self.errors))
        if "invalid_value" in metafunc.fixturenames:
            cases = [pytest.param(case, id=f"{case[0]}={case[1]!r}") for case in self.invalid_values]
            metafunc.parametrize("invalid_value", cases)

    def assert_refused(self, overrides: dict[str, Any], message: str) -> None:
        """Assert ``config_class(**{**config, **overrides})`` raises a ConfigError matching ``message``."""
        with pytest.raises(ConfigError, match=message):
            self.config_class(**{**self.config, **overrides})

    def test_bad_config_is_refused(self, config_error: str) -> None:
        overrides, message = self.errors[config_error]
        self.assert_refused(overrides, message)

    def test_invalid_value_names_the_field_and_range(self, invalid_value: tuple[str, Any, str]) -> None:
        field, value, expected = invalid_value
        stated = re.escape(f"invalid {self.config_class.__name__}: {field}={value!r}: Input should be ")
        self.assert_refused({field: value}, stated + expected)
