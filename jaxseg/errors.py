"""The errors that jaxseg's command lines report in one line instead of a traceback.

* `JaxsegError`: base of the errors that name a problem of the user's data or settings, with a
  message that says what is wrong and how to fix it. `jaxseg.cli.run` prints such an error as
  ``prog: error: <message>`` and exits with code 2; any other exception is a bug and keeps its
  traceback.
* `ConfigError` (also a `ValueError`): a bad setting or flag. The message names the field, the
  value given and what is allowed, e.g. ``"--loss must be 'dice' or 'ce', got 'dcie'."``.
* `DataError`: data that cannot be used -- a missing manual directory, a missing, truncated or
  malformed file, a cached build made with other settings.

An error raised as a standard type (the dataset builders raise `FileNotFoundError` and
`ValueError` with good messages) becomes a `DataError` with `as_data_error`, which keeps the
original type as well: ``as_data_error(FileNotFoundError("x"))`` is an instance of both
`DataError` and `FileNotFoundError`, with the same message and arguments, so callers (and tests)
that catch the standard type are unaffected.
"""

from __future__ import annotations

import functools

__all__ = ["ConfigError", "DataError", "JaxsegError", "as_data_error"]


class JaxsegError(Exception):
  """A problem of the user's data or settings; the message says what is wrong and the fix."""


class ConfigError(JaxsegError, ValueError):
  """A bad setting or flag: the message names the field, the value and what is allowed."""


class DataError(JaxsegError):
  """Unusable data: missing manual directory, missing, corrupt or malformed files."""


@functools.cache
def _data_error_type(base: type[BaseException]) -> type[DataError]:
  """The class ``DataError`` + ``base`` (one per base, so equal errors have equal types)."""
  name = f"DataError[{base.__name__}]"
  return type(name, (DataError, base), {
      "__module__": __name__,
      "__qualname__": name,
      "__doc__": f"A `DataError` that is also a `{base.__name__}`.",
      "__reduce__": lambda self: (_rebuild, (base, self.args)),
  })


def _rebuild(base: type[BaseException], args: tuple[object, ...]) -> DataError:
  """Unpickles an error of `_data_error_type` (the class itself is made at run time)."""
  return _data_error_type(base)(*args)


def as_data_error(error: Exception) -> JaxsegError:
  """``error`` as a `DataError` that is still an instance of ``type(error)``.

  Args:
    error: the exception raised while data were read or built.

  Returns:
    ``error`` itself if it is a `JaxsegError` already; otherwise a new exception of a class
    derived from both `DataError` and ``type(error)``, with the same ``args`` (hence the same
    message) and notes. When ``type(error)`` cannot be rebuilt from its ``args`` (an exception
    class with a special constructor), a plain `DataError` whose message starts with the
    original type's name. The new exception takes over ``error``'s traceback and cause (and
    hides ``error`` itself), so ``except OSError as e: raise as_data_error(e)`` shows the frames
    and the message once, as if ``error`` had been a `DataError` from the start.
  """
  if isinstance(error, JaxsegError):
    return error
  args = error.args
  if isinstance(error, OSError) and error.filename is not None:  # Not kept in OSError.args.
    args = (error.errno, error.strerror, error.filename)
    if error.filename2 is not None:
      args += (None, error.filename2)
  try:
    new = _data_error_type(type(error))(*args)
    if str(new) != str(error):
      raise TypeError("message differs")
  except Exception:  # pylint: disable=broad-except  (any constructor may refuse the args)
    new = DataError(f"{type(error).__name__}: {error}")
  for note in getattr(error, "__notes__", ()):
    new.add_note(note)
  cause = error.__cause__
  if cause is None and not error.__suppress_context__:
    cause = error.__context__
  new.__cause__ = cause
  new.__suppress_context__ = True
  return new.with_traceback(error.__traceback__)
