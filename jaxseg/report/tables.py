"""Plain-text tables (Markdown) and number formatting shared by every experiment report."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table; cells are converted with ``str``."""
  lines = ["| " + " | ".join(map(str, headers)) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  for row in rows:
    if len(row) != len(headers):
      raise ValueError(f"row {row} has {len(row)} cells, expected {len(headers)}")
    lines.append("| " + " | ".join(map(str, row)) + " |")
  return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float], precision: int = 3) -> str:
  """``mean ± std`` over defined values, with ``(n undefined)`` appended when some are NaN."""
  values = np.asarray(values, dtype=np.float64)
  defined = values[~np.isnan(values)]
  if defined.size == 0:
    return "undefined"
  text = f"{defined.mean():.{precision}f} ± {defined.std():.{precision}f}"
  undefined = values.size - defined.size
  return text + (f" ({undefined} undef.)" if undefined else "")


def signed(value: float, precision: int = 3) -> str:
  """A difference with an explicit sign, e.g. ``+0.012``."""
  return "n/a" if value is None or math.isnan(value) else f"{value:+.{precision}f}"


def write_matrix_csv(path: str | os.PathLike, matrix: np.ndarray, names: Sequence[str]) -> None:
  """A labelled square matrix as CSV (header row and first column hold the class names)."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([""] + list(names))
    for name, row in zip(names, np.asarray(matrix)):
      writer.writerow([name] + [f"{v:.4f}" for v in row])


def _jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _jsonable(dataclasses.asdict(value))
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    return None if math.isnan(float(value)) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: str | os.PathLike, data: Any) -> None:
  """JSON with NumPy values converted and NaN written as ``null``."""
  with open(path, "w") as f:
    json.dump(_jsonable(data), f, indent=2)
    f.write("\n")
