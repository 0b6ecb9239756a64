"""Errors that are the user's to fix (a bad path, config value or checkpoint). Every clipjax
CLI prints them as one line and exits with status 2 (`clipjax.cli.run`); anything else is a
bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
  """Base class: the message names the input and what was expected."""


class ConfigError(UserError, ValueError):
  """A config field with an unknown name, a bad value, or a path that does not exist."""


class DataError(UserError, ValueError):
  """A data source that yields no usable record (every record in a window was bad)."""
