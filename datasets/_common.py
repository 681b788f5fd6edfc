"""Helpers shared by the tfds builders of jaxseg: configs, builds, manual data.

Every builder of the project is a `tfds.core.GeneratorBasedBuilder` whose features are
`tfds.features.Tensor` (volumes zlib-encoded) and `Text`, written as ``array_record`` and read
with ``as_data_source()``: this path needs no TensorFlow (REFERENCE, platform facts).

* `JaxsegBuilderConfig`: a `BuilderConfig` whose settings are dataclass fields. ``replace``
  returns a copy with other settings and a *distinct* name derived from a fingerprint of the
  settings, so cached builds of different settings never share a directory. `check_choice`,
  `check_shape`, `check_spacing` and `check_percentiles` validate the settings the builders
  share, with the same messages everywhere; they, ``replace`` and `builder_config` raise
  `jaxseg.errors.ConfigError` (a `ValueError`).
* `builder_config`: a builder's config by name (or object) with setting overrides.
* `prepare`: builds a dataset (if it is not built yet) and reads every split into memory as
  lists of dicts of NumPy arrays. The errors raised meanwhile reach the caller as
  `jaxseg.errors.DataError` (still of their original type), which ``jaxseg.cli.run`` prints in
  one block without a traceback; tfds' own banner, progress bars and log lines are silenced
  (`quiet_tfds`). A build that reads a manual directory records what it read (`MANUAL_RECORD`,
  `fingerprint_manual_dir`); a cached build is reused only while that directory is unchanged,
  rebuilt when another directory is given or its files changed, and refused when it is gone.
* `ManualRelease`: a release read from the manual directory (what to download, its layout):
  the manual directory of a build, and the `FileNotFoundError` (`missing_manual_data`) to raise
  when the data are missing. `append_to_errors` adds a hint (what to re-download) to the errors
  raised while a release's files are read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from jaxseg.data import preprocess
from jaxseg.errors import ConfigError, as_data_error

__all__ = [
    "DATA_DIR_ENV",
    "JaxsegBuilderConfig",
    "MANUAL_RECORD",
    "ManualRelease",
    "append_to_errors",
    "builder_config",
    "check_choice",
    "check_percentiles",
    "check_shape",
    "check_spacing",
    "default_data_dir",
    "fingerprint_manual_dir",
    "missing_manual_data",
    "prepare",
    "quiet_tfds",
    "resolve_manual_dir",
    "to_numpy_example",
]

DATA_DIR_ENV = "JAXSEG_DATA_DIR"
"""Environment variable that overrides the default tfds data directory."""

_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))


def default_data_dir() -> str:
  """``$JAXSEG_DATA_DIR`` if set and non-empty, else ``~/.cache/jaxseg/tfds``."""
  env = os.environ.get(DATA_DIR_ENV, "").strip()
  if env:
    return os.path.expanduser(env)
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxseg", "tfds")


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in sorted(value.items())}
  return value


@dataclasses.dataclass(eq=False)
class JaxsegBuilderConfig(tfds.core.BuilderConfig):
  """Base of the project's builder configs: settings are extra dataclass fields.

  Subclasses add their settings as fields with defaults. ``settings()`` returns them (the
  fields that tfds' `BuilderConfig` does not define), ``fingerprint()`` hashes them, and
  ``replace(**changes)`` makes a custom config named ``f"{name}_{fingerprint[:10]}"``.
  """

  def settings(self) -> dict[str, Any]:
    """The config's own settings (all fields but tfds' name/version/description/...)."""
    return {
        f.name: _jsonable(getattr(self, f.name))
        for f in dataclasses.fields(self)
        if f.name not in _BASE_FIELDS
    }

  def fingerprint(self) -> str:
    """SHA-256 (hex) of the settings and the version: equal iff the built data are equal."""
    payload = json.dumps(
        {"settings": self.settings(), "version": str(self.version)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()

  def replace(self, *, name: str | None = None, **changes: Any) -> JaxsegBuilderConfig:
    """A copy with ``changes`` applied and a distinct name.

    Args:
      name: name of the new config; by default the base name (this config's name without a
        previous fingerprint suffix) plus ``_`` and 10 hex digits of the new settings'
        fingerprint, so two configs share a name only when they build the same data.
      **changes: new values of settings fields.

    Returns:
      The new config.
    """
    unknown = set(changes) - set(self.settings())
    if unknown:
      raise ConfigError(
          f"Unknown setting(s) {sorted(unknown)} for {type(self).__name__}; "
          f"known: {sorted(self.settings())}."
      )
    new = dataclasses.replace(self, **changes)
    base = re.sub(r"_[0-9a-f]{10}$", "", self.name)
    if name is None:
      if new.settings() == self.settings():
        return self
      name = f"{base}_{new.fingerprint()[:10]}"
    new.name = name
    new.description = f"Custom config derived from {base!r}; settings: {new.settings()}."
    return new


_Config = TypeVar("_Config", bound=JaxsegBuilderConfig)


def builder_config(
    builder_cls: type[tfds.core.DatasetBuilder], config: str | _Config, **overrides: Any
) -> _Config:
  """``builder_cls``'s config named ``config`` (or ``config`` itself), with ``overrides``.

  Overrides go through `JaxsegBuilderConfig.replace`, so the result has a distinct name.
  """
  if isinstance(config, str):
    configs: Mapping[str, _Config] = builder_cls.builder_configs
    if config not in configs:
      raise ConfigError(f"Unknown config {config!r}; available: {sorted(configs)}.")
    config = configs[config]
  if overrides:
    config = config.replace(**overrides)
  return config


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  """Raises ``"{name} must be 'a', 'b' or 'c', got ..."`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    options = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
    raise ConfigError(f"{name} must be {options}, got {value!r}.")


def check_shape(name: str, value: Any) -> None:
  """Raises unless ``value`` is 3 positive ints (a volume shape)."""
  if len(tuple(value)) != 3 or min(int(v) for v in value) < 1:
    raise ConfigError(f"{name} must be 3 positive ints, got {value}.")


def check_spacing(name: str, value: Any, *, ndim: int = 3) -> tuple[float, ...]:
  """``value`` as floats if it is a voxel spacing in mm (`preprocess.validate_spacing`: ``ndim``
  finite, positive numbers), else a `ConfigError` with the validator's message."""
  try:
    return tuple(float(v) for v in preprocess.validate_spacing(value, name=name, ndim=ndim))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def check_percentiles(value: Any) -> None:
  """Raises unless ``value`` is ``(lower, upper)`` with ``0 <= lower <= upper <= 100``."""
  if len(tuple(value)) != 2:
    raise ConfigError(f"clip_percentiles must be (lower, upper), got {value}.")
  lo, hi = value
  if not 0.0 <= lo <= hi <= 100.0:
    raise ConfigError(
        f"clip_percentiles must satisfy 0 <= lower <= upper <= 100, got {value}."
    )

def missing_manual_data(
    *,
    dataset: str,
    source: str,
    manual_dir: str | os.PathLike[str] | None,
    layout: str,
    missing: Iterable[str] = (),
    problem: str | None = None,
) -> FileNotFoundError:
  """The error for manual data that are absent or incomplete.

  Args:
    dataset: dataset name, e.g. ``"male_pelvic_mr (config zenodo)"``.
    source: what to download, e.g. ``"data.zip from https://zenodo.org/records/7013610"``.
    manual_dir: where the data were looked for (and should be put).
    layout: the expected layout under ``manual_dir`` (multi-line text).
    missing: the paths that were missing (at most 20 are listed).
    problem: optional one-line statement of what is wrong (default: missing files).

  Returns:
    A `FileNotFoundError` (to be raised by the caller) with all of that in its message.
  """
  missing = list(missing)
  where = os.fspath(manual_dir) if manual_dir is not None else "<no manual_dir given>"
  lines = [problem or f"Manual data for {dataset} are missing or incomplete in {where}."]
  if missing:
    shown = missing[:20]
    lines.append(f"Missing ({len(missing)}): " + ", ".join(shown))
    if len(missing) > len(shown):
      lines[-1] += f", ... ({len(missing) - len(shown)} more)"
  lines.append(f"Download {source}, and put it in the manual directory {where}")
  lines.append("(pass it as manual_dir=...) with this layout:")
  lines.extend("  " + line for line in layout.strip("\n").splitlines())
  return FileNotFoundError("\n".join(lines))


def to_numpy_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a decoded example to NumPy arrays, with ``Text`` bytes decoded to ``str``."""
  out: dict[str, Any] = {}
  for key, value in example.items():
    if isinstance(value, Mapping):
      out[key] = to_numpy_example(value)
    elif isinstance(value, bytes):
      out[key] = value.decode("utf-8")
    elif isinstance(value, np.ndarray) and value.dtype.kind in ("S", "O") and value.ndim == 0:
      item = value.item()
      out[key] = item.decode("utf-8") if isinstance(item, bytes) else item
    else:
      out[key] = np.asarray(value)
  return out


_DATA_ERRORS = (OSError, ValueError, EOFError, ImportError)
"""What `prepare` reports as a `DataError`: bad or missing files and settings of the data,
and missing optional readers (e.g. SimpleITK). Other types (TypeError, KeyError, ...) are bugs
and keep their traceback."""

_TFDS_DIR = os.path.dirname(os.path.abspath(tfds.__file__)) + os.sep


class _DropTfdsRecords(logging.Filter):
  """Drops the records below ERROR that tfds' own modules log (ours and others' pass)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not os.path.abspath(
        record.pathname).startswith(_TFDS_DIR)


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
  """Silences tfds' chatter in the block: its log lines below ERROR and its progress bars.

  tfds logs through absl (the ``absl`` logger) and the root logger, e.g. ``Variant folder ...
  has no dataset_info.json`` and per-split notes; a filter on those two loggers drops the
  records below ERROR whose source file lies in the ``tensorflow_datasets`` package, so
  jaxseg's builders (which log warnings about the data they read) and everything else are
  unaffected. tfds' ``Downloading and preparing dataset ...`` / ``Dataset ... downloaded and
  prepared`` lines are printed by the builder itself; `prepare` switches those off on its
  builder.
  """
  loggers = [logging.getLogger("absl"), logging.getLogger()]
  drop = _DropTfdsRecords()
  for logger in loggers:
    logger.addFilter(drop)
  tqdm_utils = tfds.core.utils.tqdm_utils
  bars = getattr(tqdm_utils, "_active", True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(bars)
    for logger in loggers:
      logger.removeFilter(drop)


def _no_banner(builder: tfds.core.DatasetBuilder) -> None:
  """Turns off the lines tfds prints (termcolor, stdout) before and after a build."""
  for name in ("_log_download_bytes", "_log_download_done"):
    if hasattr(builder, name):
      setattr(builder, name, lambda: None)


MANUAL_RECORD = "jaxseg_manual_dir.json"
"""File that `prepare` writes in a build's directory (``builder.data_dir``) after a build: the
manual directory the build read, as ``{"format": 1, "manual_dir": <resolved path> or null,
"files": {<relative name>: [size, mtime_ns], ...}}`` (``null``: the build read none)."""

_RECORD_FORMAT = 1

_MANUAL_READS: list[_ManualSource] | None = None
"""While `prepare` builds: the manual directories that `resolve_manual_dir` handed out."""


def fingerprint_manual_dir(path: str | os.PathLike[str]) -> dict[str, list[int]]:
  """``{relative name: [size, mtime_ns]}`` of every file under ``path``, recursively.

  Names use ``/``; symbolic links are followed (each real directory is listed once), a broken
  link counts as ``[-1, -1]``. Only ``os.scandir`` and one ``stat`` per file: no file is read,
  so a directory of thousands of files takes a fraction of a second. A file rewritten with the
  same size within the file system's mtime resolution goes unnoticed; ``touch`` alone counts as
  a change.
  """
  files: dict[str, list[int]] = {}
  seen: set[str] = set()
  stack = [(os.fspath(path), "")]
  while stack:
    folder, prefix = stack.pop()
    real = os.path.realpath(folder)
    if real in seen:
      continue
    seen.add(real)
    with os.scandir(folder) as entries:
      for entry in entries:
        name = prefix + entry.name
        try:
          if entry.is_dir():
            stack.append((entry.path, name + "/"))
            continue
          st = entry.stat()
          files[name] = [int(st.st_size), int(st.st_mtime_ns)]
        except FileNotFoundError:
          files[name] = [-1, -1]
  return dict(sorted(files.items()))


@dataclasses.dataclass(frozen=True)
class _ManualSource:
  """A manual directory as a build read it: resolved path and `fingerprint_manual_dir`."""

  path: str
  files: dict[str, list[int]]

  @classmethod
  def of(cls, path: str | os.PathLike[str]) -> _ManualSource:
    return cls(os.path.realpath(os.fspath(path)), fingerprint_manual_dir(path))

  def changes(self, now: Mapping[str, list[int]]) -> str | None:
    """What differs in ``now`` (a fingerprint of the same directory), or None if nothing."""
    parts = []
    changed = sorted(k for k in now if k in self.files and list(self.files[k]) != list(now[k]))
    added = sorted(k for k in now if k not in self.files)
    removed = sorted(k for k in self.files if k not in now)
    for names, what in ((changed, "changed"), (added, "added"), (removed, "removed")):
      if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{len(names)} file{'s' if len(names) > 1 else ''} {what} ({shown})")
    return "; ".join(parts) or None


@contextlib.contextmanager
def _recording_manual_dirs() -> Iterator[list[_ManualSource]]:
  """Collects, in the yielded list, the manual directory handed out by `resolve_manual_dir`."""
  global _MANUAL_READS  # pylint: disable=global-statement
  previous, _MANUAL_READS = _MANUAL_READS, []
  try:
    yield _MANUAL_READS
  finally:
    _MANUAL_READS = previous


def _write_manual_record(build_dir: str, source: _ManualSource | None) -> None:
  """Writes `MANUAL_RECORD` into ``build_dir`` (atomically)."""
  record = {
      "format": _RECORD_FORMAT,
      "manual_dir": None if source is None else source.path,
      "files": {} if source is None else source.files,
  }
  path = os.path.join(build_dir, MANUAL_RECORD)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f)
  os.replace(tmp, path)


def _read_manual_record(build_dir: str) -> dict[str, Any] | None:
  """The `MANUAL_RECORD` of a build, or None when it has none (or an unreadable one)."""
  try:
    with open(os.path.join(build_dir, MANUAL_RECORD), encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
    return None
  return record


def _reads_manual_dir(cfg: tfds.core.BuilderConfig | None) -> bool:
  """Whether builds of ``cfg`` read a manual directory: by convention, unless a phantom."""
  return not _builder.is_phantom(cfg)


def _usable_dir(path: str) -> bool:
  """Whether ``path`` is a non-empty directory (what tfds accepts as a manual directory)."""
  try:
    with os.scandir(path) as entries:
      return any(True for _ in entries)
  except OSError:
    return False


def _check_manual_source(
    builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike[str] | None
) -> tuple[str | None, str | os.PathLike[str] | None]:
  """Checks a cached build against its manual directory (`prepare`).

  Args:
    builder: the builder of a prepared (cached) build.
    manual_dir: the manual directory given to `prepare`, or None.

  Returns:
    ``(reason, manual_dir)``: why the build must be made again (None: use the cache), and the
    manual directory to build from (the recorded one when none is given).

  Raises:
    FileNotFoundError: the manual directory of a cached real-data build is gone or not usable,
      or a build without a record is used without ``manual_dir``.
  """
  build_dir = os.fspath(builder.data_dir)
  cfg = builder.builder_config
  label = f"{builder.name}/{cfg.name if cfg is not None else 'default'}"
  record = _read_manual_record(build_dir)
  given = os.path.realpath(os.fspath(manual_dir)) if manual_dir is not None else None
  if record is None:
    if not _reads_manual_dir(cfg):
      return None, manual_dir
    if given is None:
      raise FileNotFoundError(
          f"The cached build of {label} in {build_dir} does not record the manual directory "
          "it was built from, so it cannot be checked; pass that directory as manual_dir "
          f"(--manual-dir) to build it again, or delete {build_dir}."
      )
    if not _usable_dir(given):
      raise FileNotFoundError(
          f"Manual directory {manual_dir} for {label} does not exist or is empty (the cached "
          f"build in {build_dir} cannot be checked without it); pass the directory that holds "
          "the data as manual_dir (--manual-dir)."
      )
    return (f"the cached build does not record its manual directory (made before jaxseg "
            f"checked it); building it again from {given}"), manual_dir
  recorded = record.get("manual_dir")
  if recorded is None:  # The build read no manual directory (a phantom).
    return None, manual_dir
  if given is None:
    if not _usable_dir(recorded):
      raise FileNotFoundError(
          f"The cached build of {label} in {build_dir} was built from {recorded}, which is "
          "gone or empty; pass the data's current directory as manual_dir (--manual-dir) to "
          f"build it again from there, or delete {build_dir}."
      )
    given, manual_dir = recorded, recorded
  elif not _usable_dir(given):
    raise FileNotFoundError(
        f"Manual directory {manual_dir} for {label} does not exist or is empty (the cached "
        f"build in {build_dir} was built from {recorded}); pass the directory that holds the "
        "data as manual_dir (--manual-dir)."
    )
  if given != recorded:
    return f"the manual directory changed ({recorded} -> {given})", manual_dir
  changes = _ManualSource(recorded, record.get("files") or {}).changes(
      fingerprint_manual_dir(given))
  if changes is not None:
    return f"the manual directory changed ({given}: {changes})", manual_dir
  return None, manual_dir


def prepare(
    builder_cls: type[tfds.core.DatasetBuilder],
    *,
    config: str | tfds.core.BuilderConfig | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    sort_key: str = "case_id",
) -> dict[str, list[dict[str, Any]]]:
  """Builds a dataset if needed and reads every split fully into memory.

  Runs ``download_and_prepare`` with ``file_format="array_record"`` (no TensorFlow needed) and
  a ``tfds.download.DownloadConfig(manual_dir=manual_dir)`` (GCS look-ups off), then reads each
  split with ``builder.as_data_source()``. A build prints one line on stderr, ``building
  <dataset>/<config> in <dir> (first run only)``; tfds' own output is silenced (`quiet_tfds`).

  A build that read a manual directory (through `resolve_manual_dir`) leaves `MANUAL_RECORD` in
  its directory ``builder.data_dir``: the directory's resolved path and, per file under it, the
  relative name, size and mtime (`fingerprint_manual_dir`). A cached build is then checked
  against the manual directory before it is used:

  * a build that read no manual directory (the phantom configs) is used as it is;
  * the same resolved directory with the same files: the cache is used. ``manual_dir=None``
    means the directory the cache was built from;
  * another directory, or files added, removed or changed (size or mtime): that version's
    build directory is deleted and built again, with one line on stderr, ``rebuilding
    <dataset>/<config>: the manual directory changed (<what changed>)``;
  * the recorded directory is gone (``manual_dir=None``), or the one given does not exist or is
    empty: a `DataError` (`FileNotFoundError`) that names both; the cache is left alone;
  * a cached build without a record (made before these checks) of a config that reads manual
    data (``source`` other than ``"phantom"``, the builders' convention): built again once if
    ``manual_dir`` is given, else a `DataError` that asks for it.

  Args:
    builder_cls: the builder class.
    config: config name or object (None: the builder's default).
    data_dir: tfds data directory; default `default_data_dir()`.
    manual_dir: directory holding manually downloaded data, for configs that need it.
    sort_key: feature by which each split's examples are sorted (deterministic order).

  Returns:
    ``{split: [example, ...]}`` with examples as dicts of NumPy arrays (strings as ``str``).

  Raises:
    jaxseg.errors.DataError: an `OSError`, `ValueError`, `EOFError` or `ImportError` raised
      while the dataset was built or read (missing or malformed manual data: the builders' own
      messages, which say what to download), re-raised as a `DataError` that is also of the
      original type, with the same message; or a build with the same config name but
      different settings (as recorded in its metadata) exists already in ``data_dir`` (also a
      `ValueError`); or a cached build whose manual directory is gone or cannot be checked
      (also a `FileNotFoundError`, see above).
  """
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  config_name = getattr(config, "name", config) or "default"
  try:
    with build_lock(data_dir, builder_cls.name, config_name), quiet_tfds():
      return _prepare(builder_cls, config=config, data_dir=data_dir, manual_dir=manual_dir,
                      sort_key=sort_key)
  except _DATA_ERRORS as e:
    raise as_data_error(e)  # pylint: disable=raise-missing-from  (takes over e's traceback)


@contextlib.contextmanager
def build_lock(data_dir: str, name: str, config: str) -> Iterator[None]:
  """Holds ``<data_dir>/<name>/.<config>.lock`` exclusively (an advisory ``flock``).

  Two processes that prepare the same dataset config at once (two runs started side by side on
  a fresh cache, or after the manual directory changed) would otherwise both delete and write
  the same build directory. The second one waits here, with one line on stderr, and then finds
  the build made. Where ``fcntl`` is missing (Windows), builds are not serialised.
  """
  try:
    import fcntl  # pylint: disable=import-outside-toplevel
  except ImportError:
    yield
    return
  directory = os.path.join(data_dir, name)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f".{config}.lock")
  with open(path, "a", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"waiting for another process that prepares {name}/{config} ({path})",
            file=sys.stderr, flush=True)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(
    builder_cls: type[tfds.core.DatasetBuilder],
    *,
    config: str | tfds.core.BuilderConfig | None,
    data_dir: str,
    manual_dir: str | os.PathLike[str] | None,
    sort_key: str,
) -> dict[str, list[dict[str, Any]]]:
  """`prepare`, without its error conversion and quieting."""
  builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
  _no_banner(builder)
  cfg = builder.builder_config
  where = cfg.name if cfg is not None else "default"
  prepared = builder.is_prepared()
  if isinstance(cfg, JaxsegBuilderConfig) and prepared:
    stored = (builder.info.metadata or {}).get("config_fingerprint")
    if stored is not None and stored != cfg.fingerprint():
      raise ValueError(
          f"The build of {builder.name}/{cfg.name} in {builder.data_dir} was made with "
          "different settings; give a custom config a distinct name (use config.replace(...)) "
          "or delete that directory."
      )
  if prepared:
    reason, manual_dir = _check_manual_source(builder, manual_dir)
    if reason is not None:
      print(f"rebuilding {builder.name}/{where}: {reason}", file=sys.stderr, flush=True)
      shutil.rmtree(os.fspath(builder.data_dir))
      builder = builder_cls(config=config, data_dir=data_dir, file_format="array_record")
      _no_banner(builder)
      prepared = builder.is_prepared()
  else:
    print(f"building {builder.name}/{where} in {data_dir} (first run only)", file=sys.stderr,
          flush=True)
    if os.path.isdir(os.fspath(builder.data_dir)):
      # Left by an interrupted clean-up (no dataset_info.json): tfds would take the directory
      # for a finished build and read no examples from it.
      shutil.rmtree(os.fspath(builder.data_dir))
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir is not None else None,
      try_download_gcs=False,
  )
  with _recording_manual_dirs() as read:
    builder.download_and_prepare(file_format="array_record", download_config=download_config)
  if not prepared:
    _write_manual_record(os.fspath(builder.data_dir), read[0] if read else None)
  sources = builder.as_data_source()
  result: dict[str, list[dict[str, Any]]] = {}
  for split in sorted(sources):
    source = sources[split]
    examples = [to_numpy_example(source[i]) for i in range(len(source))]
    if examples and sort_key in examples[0]:
      examples.sort(key=lambda ex: ex[sort_key])
    result[split] = examples
  return result


def resolve_manual_dir(dl_manager: tfds.download.DownloadManager, *, what: str,
                       error: Callable[..., Exception]) -> str:
  """The manual directory of a build, or ``error(given, problem=...)`` when tfds has none.

  tfds raises a bare ``AssertionError`` when the manual directory is not given, missing or
  empty; this turns it into the builder's own error, which says what to download and where.
  ``what`` names the dataset and config in the message, e.g. ``"micro_us (config 'microsegnet')"``.
  Inside `prepare`, the directory is also fingerprinted (`fingerprint_manual_dir`) for the
  build's `MANUAL_RECORD`: builders must get their manual directory here (or through
  `ManualRelease.manual_dir`), never from ``dl_manager.manual_dir`` directly.
  """
  try:
    manual_dir = os.fspath(dl_manager.manual_dir)
  except AssertionError:
    given = getattr(dl_manager, "_manual_dir", None)
    raise error(given, problem=f"Manual directory {given} for {what} does not exist or is "
                "empty.") from None
  if _MANUAL_READS is not None and not _MANUAL_READS:
    _MANUAL_READS.append(_ManualSource.of(manual_dir))
  return manual_dir


@dataclasses.dataclass(frozen=True)
class ManualRelease:
  """A release that a builder reads from the manual directory.

  Attributes:
    dataset: the dataset and config in messages, e.g. ``"micro_us (config 'microsegnet')"``.
    source: what to download (`missing_manual_data`).
    layout: the expected layout under the manual directory (multi-line text).
  """

  dataset: str
  source: str
  layout: str

  def error(
      self,
      manual_dir: str | os.PathLike[str] | None,
      missing: Iterable[str] = (),
      problem: str | None = None,
  ) -> FileNotFoundError:
    """The `missing_manual_data` error of this release (to be raised by the caller)."""
    return missing_manual_data(dataset=self.dataset, source=self.source, manual_dir=manual_dir,
                               layout=self.layout, missing=missing, problem=problem)

  def manual_dir(self, dl_manager: tfds.download.DownloadManager) -> str:
    """The build's manual directory (`resolve_manual_dir`), or this release's error."""
    return resolve_manual_dir(dl_manager, what=self.dataset, error=self.error)


@contextlib.contextmanager
def append_to_errors(
    text: str, types: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)
) -> Iterator[None]:
  """Re-raises an exception of ``types`` raised in the block as ``type(e)(f"{e}{text}")``.

  Used around the reading and preprocessing of a release's files, with ``text`` a hint that
  names the files or says what to re-download.
  """
  try:
    yield
  except types as e:
    raise type(e)(f"{e}{text}") from e
