"""Leaving cases out of a build: the ``exclude_ids`` setting of the builders.

Public releases overlap: PI-CAI contains 328 ProstateX exams, and the Zenodo male-pelvis release
(``male_pelvic_mr``, config ``zenodo``) includes PROMISE12 cases. Training on one release and
testing on another that shares patients leaks. A config's ``exclude_ids`` (a tuple of the
builder's own case ids) leaves those cases out before the split; `normalize_ids` checks and
sorts the setting (so its order does not change the build's fingerprint), `exclude_cases`
applies it: the number left out is logged, and an id that matches no case is a logged warning
(a typo, or a case of another release).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from jaxseg.errors import ConfigError

__all__ = ["exclude_cases", "normalize_ids"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")


def normalize_ids(value: Any, *, name: str = "exclude_ids",
                  canonical: Callable[[str], str] | None = None) -> tuple[str, ...]:
  """``value`` as a sorted tuple of distinct, non-empty case ids.

  Args:
    value: a sequence of ids (str, or ints such as Zenodo uids), or one string of ids separated
      by commas or whitespace (as a command-line flag gives it); None or ``()``: no id.
    name: the setting's name, for the error message.
    canonical: maps each id to the builder's spelling (e.g. zero-padded uids), or None.

  Returns:
    The ids, sorted.

  Raises:
    ConfigError: an id is empty or not a string / integer.
  """
  if value is None:
    return ()
  if isinstance(value, str):
    value = [v for v in re.split(r"[\s,;]+", value) if v]
  out = set()
  for v in value:
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
      raise ConfigError(f"{name} must be case ids (strings), got {v!r} in {value!r}.")
    v = str(v).strip()
    out.add(canonical(v) if canonical is not None else v)
  return tuple(sorted(out))


def exclude_cases(
    cases: Mapping[str, _T],
    exclude_ids: Iterable[str],
    *,
    dataset: str,
    aliases: Callable[[str], Iterable[str]] | None = None,
    why: str = "exclude_ids",
) -> dict[str, _T]:
  """``cases`` without those named in ``exclude_ids`` (logged), in their order.

  Args:
    cases: ``{case_id: case}``.
    exclude_ids: ids to leave out; a case goes if its id, or one of its ``aliases``, is one.
    dataset: the dataset and config, for the log lines (e.g. ``"prostatex_bpmri (picai)"``).
    aliases: other names of a case id that also exclude it (e.g. a PI-CAI patient id for each
      of its studies), or None.
    why: what asked for the exclusion, in the log lines.

  Returns:
    The remaining cases.

  Raises:
    ValueError: no case would be left.
  """
  wanted = set(exclude_ids)
  if not wanted:
    return dict(cases)
  used: set[str] = set()
  kept: dict[str, _T] = {}
  for case_id, case in cases.items():
    names = {case_id, *(aliases(case_id) if aliases is not None else ())}
    hit = names & wanted
    if hit:
      used |= hit
    else:
      kept[case_id] = case
  unmatched = sorted(wanted - used)
  if unmatched:
    _LOG.warning("%s: %d id(s) of %s match no case and are ignored: %s", dataset,
                 len(unmatched), why, ", ".join(unmatched[:20])
                 + (" ..." if len(unmatched) > 20 else ""))
  _LOG.info("%s: leaving out %d of %d cases (%s).", dataset, len(cases) - len(kept),
            len(cases), why)
  if cases and not kept:
    raise ValueError(f"{why} leaves none of the {len(cases)} cases of {dataset}; remove "
                     "some ids (or exclude fewer cases) to build it.")
  return kept
