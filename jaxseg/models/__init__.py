"""Flax models of jaxseg and a registry used to save and rebuild them by name."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxseg.models.prob_unet3d import ProbAttentionUNet3D, ProbUNet3DConfig, mc_predict
from jaxseg.models.transunet import TransUNet, TransUNetConfig
from jaxseg.models.unet2d import UNet2D, UNet2DConfig

# name -> (module class, config class); every module takes its config as the ``config`` field.
REGISTRY: dict[str, tuple[type, type]] = {
    "UNet2D": (UNet2D, UNet2DConfig),
    "TransUNet": (TransUNet, TransUNetConfig),
    "ProbAttentionUNet3D": (ProbAttentionUNet3D, ProbUNet3DConfig),
}


def register(name: str, module_cls: type, config_cls: type) -> None:
  """Makes a model known to :func:`build` / :func:`describe` (and so to saved checkpoints)."""
  REGISTRY[name] = (module_cls, config_cls)


def describe(model: Any) -> tuple[str, dict[str, Any]]:
  """``(registered name, JSON-able config)`` of a model instance."""
  for name, (module_cls, _) in REGISTRY.items():
    if type(model) is module_cls:
      return name, _jsonable(dataclasses.asdict(model.config))
  raise ValueError(f"{type(model).__name__} is not registered in jaxseg.models.REGISTRY")


def build(name: str, config: dict[str, Any]) -> Any:
  """Rebuilds a model from :func:`describe`'s output."""
  if name not in REGISTRY:
    raise ValueError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
  module_cls, config_cls = REGISTRY[name]
  fields = {f.name for f in dataclasses.fields(config_cls)}
  unknown = set(config) - fields
  if unknown:
    raise ValueError(f"config of {name} has unknown fields {sorted(unknown)}")
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
  return module_cls(config_cls(**values))


def _jsonable(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


__all__ = ["REGISTRY", "ProbAttentionUNet3D", "ProbUNet3DConfig", "TransUNet", "TransUNetConfig",
           "UNet2D", "UNet2DConfig", "build", "describe", "mc_predict", "register"]
