"""``python -m experiments.compare --config FILE``: run any loss comparison config.

A config file defines ``get_config(preset)`` returning an ``ml_collections.ConfigDict`` built on
:func:`experiments.runner.base_config`, with ``config.losses`` a list of
:class:`experiments.runner.LossConfig` (name, ``fn(outputs, batch, **params)``, params). The
runner trains them under one protocol (same initialisation and batches, model selection on
validation cases, paired bootstrap CIs against the first loss) and writes
``results/compare/<config name>/``. A file may also define ``STUDY`` (a
:class:`experiments.runner.Study`) for its own metrics, and ``HELP`` / ``ALIASES`` for its flags.
See ``experiments/configs/example_own_loss.py`` and README's "Compare your own loss".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments import runner


def main(argv: Sequence[str] | None = None):
  return runner.main(None, argv, prog="python -m experiments.compare", config=None,
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
  main(sys.argv[1:])
