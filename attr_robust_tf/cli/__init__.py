"""Command-line programs of the installed package (absl apps; docs/conventions.md §7).

  python -m attr_robust_tf.cli.train --config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu
  attr-robust-train --config=attr_robust_tf/configs/experiment.py:fmnist,madry,tiny --workdir=/tmp/t

The checkout's `tools/*.py` scripts run the same code.
"""
