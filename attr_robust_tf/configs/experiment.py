"""Every experiment config behind one file, selected by its argument `<dataset>,<objective>[,<variant>]`.

  python -m attr_robust_tf.cli.train --config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu
  python -m attr_robust_tf.cli.train --config=attr_robust_tf/configs/experiment.py:fmnist,madry,tiny --workdir=/tmp/t

The argument names the dataset (mnist, fmnist, gtsrb, flower17), the objective (a row of
`attr_robust_tf.objectives`, default sarkar2021) and optionally the variant (cpu or tiny; default: the reference
settings), as big_vision's config arguments. Values and their sources: attr_robust_tf/configs/common.py.
"""
from attr_robust_tf.configs.common import get_config as _build


def get_config(arg=None):
    parts = [part.strip() for part in (arg or "").split(",")]
    if not parts[0]:
        raise ValueError("The config argument must name a dataset. Received: an empty argument. Example: "
                         "experiment.py:fmnist,sarkar2021,cpu.")
    objective = parts[1] if len(parts) > 1 and parts[1] else "sarkar2021"
    return _build(parts[0], objective, ",".join(parts[2:]) or None)
