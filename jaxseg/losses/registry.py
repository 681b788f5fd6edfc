"""Losses by name: ``jaxseg.losses.get("dice_ce", lambda_ce=0.5)(logits, labels)``.

Every registered loss takes ``(logits, labels)`` and returns per-example values ``(batch,)``.
Names are snake case; MONAI's class names are accepted as aliases (``"DiceCELoss"`` is
``"dice_ce"``), so a config written against MONAI reads the same here. ``docs/losses.md`` has the
table of every loss with its reference, conventions and MONAI / optax equivalent.

``get`` binds hyperparameters once and checks their names against the loss's keyword-only
arguments, so a typo fails at config time, not after an epoch. The returned function still accepts
keyword overrides at call time, which is how a sweep passes a traced ``alpha``:
``get("tversky")(logits, labels, alpha=a)``.

Losses that need more than ``(logits, labels)`` (AG-BCE and adaptive focal need the hard-region
mask and annotator disagreement, the boundary losses signed distance maps, deep supervision a list
of outputs) are not registered; import them from ``jaxseg.losses``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxseg.losses import compound, cross_entropy, focal, hierarchical, lovasz, region, topology

LossFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered loss: its function and the names it answers to."""

  name: str
  fn: LossFn
  aliases: tuple[str, ...] = ()

  @property
  def hyperparameters(self) -> tuple[str, ...]:
    """The keyword-only arguments ``get`` accepts for this loss."""
    return tuple(p.name for p in inspect.signature(self.fn).parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY)


_ENTRIES: dict[str, Entry] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, fn: LossFn, *, aliases: tuple[str, ...] = ()) -> None:
  """Registers ``fn(logits, labels, *, hyperparameters) -> (batch,)`` under ``name``.

  Raises:
    ValueError: ``name`` is not snake case, or it or an alias is taken.
  """
  if not name.isidentifier() or name != name.lower():
    raise ValueError(f"loss names are snake case, got {name!r}")
  for key in (name, *aliases):
    if key in _ENTRIES or key in _ALIASES:
      raise ValueError(f"loss name {key!r} is already registered")
  _ENTRIES[name] = Entry(name, fn, tuple(aliases))
  for alias in aliases:
    _ALIASES[alias] = name


def names() -> tuple[str, ...]:
  """The registered loss names, sorted (aliases not included; see :func:`aliases`)."""
  return tuple(sorted(_ENTRIES))


def aliases() -> Mapping[str, str]:
  """Alias -> name (MONAI class names)."""
  return dict(_ALIASES)


def entry(name: str) -> Entry:
  """The :class:`Entry` of a name or alias.

  Raises:
    ValueError: unknown name; the message lists the registered names (and a close match).
  """
  key = _ALIASES.get(name, name)
  if key in _ENTRIES:
    return _ENTRIES[key]
  close = difflib.get_close_matches(name, [*_ENTRIES, *_ALIASES], n=1)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  raise ValueError(f"unknown loss {name!r}.{hint} Registered: {', '.join(names())} "
                   f"(MONAI aliases: {', '.join(sorted(_ALIASES))}).")


def get(name: str, **hyperparameters: Any) -> LossFn:
  """Returns ``fn(logits, labels, **overrides) -> (batch,)`` for a registered loss.

  Args:
    name: a name from :func:`names` or a MONAI alias (``"DiceCELoss"``).
    **hyperparameters: keyword arguments of the loss, bound now; ``fn`` accepts more (or
      overrides) at call time, e.g. a traced ``alpha`` in a sweep.

  Raises:
    ValueError: unknown name, or a hyperparameter the loss does not take; the message lists what
      exists.
  """
  e = entry(name)
  known = e.hyperparameters
  unknown = sorted(set(hyperparameters) - set(known))
  if unknown:
    raise ValueError(f"loss {e.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
                     f"it takes: {', '.join(known)}.")
  fn = functools.partial(e.fn, **hyperparameters)
  functools.update_wrapper(fn, e.fn)
  return fn


register("cross_entropy", cross_entropy.softmax_cross_entropy)
register("binary_cross_entropy", cross_entropy.sigmoid_binary_cross_entropy)
register("focal", focal.softmax_focal_loss)
register("sigmoid_focal", focal.sigmoid_focal_loss, aliases=("FocalLoss",))
register("dice", region.soft_dice_loss, aliases=("DiceLoss",))
register("generalized_dice", region.generalized_dice_loss, aliases=("GeneralizedDiceLoss",))
register("tversky", region.tversky_loss, aliases=("TverskyLoss",))
register("focal_tversky", region.focal_tversky_loss)
register("dice_ce", compound.dice_ce_loss, aliases=("DiceCELoss",))
register("dice_focal", compound.dice_focal_loss, aliases=("DiceFocalLoss",))
register("soft_cldice", topology.soft_cldice_loss, aliases=("SoftclDiceLoss",))
register("dice_cldice", topology.dice_cldice_loss, aliases=("SoftDiceclDiceLoss",))
register("lovasz_softmax", lovasz.lovasz_softmax_loss)
register("lovasz_hinge", lovasz.lovasz_hinge_loss)
register("hierarchical_cross_entropy", hierarchical.hierarchical_cross_entropy)
register("expected_cost_cross_entropy", hierarchical.expected_cost_cross_entropy)
