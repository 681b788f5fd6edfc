"""Comparison configs (``ml_collections``): one file per study, ``get_config("cpu" | "paper")``.

A config is data: the dataset sources, the model, the training protocol, the evaluation and the
losses. ``python -m experiments.<study>`` and ``python -m experiments.compare --config FILE`` read
them; any field can be set on the command line (``--train.epochs 3``; ``--help`` lists them).
"""
