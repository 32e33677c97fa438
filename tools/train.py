"""Train a model from a config; rerunning the same command resumes an interrupted run (docs/configs.md).

  python tools/train.py --config=configs/fmnist_sarkar2021.py:cpu            # workdir runs/fmnist_sarkar2021_cpu
  python tools/train.py --config=configs/tiny.py:madry --workdir=runs/t --config.lr=1e-3 --strategy=mirrored
  python -m attr_robust_tf.cli.train --config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu

Writes <workdir>/config.json first, then checkpoints/ after every epoch, metrics.csv, tb/ (TensorBoard) and
finally model.keras. After a crash or `kill -9`, the same command continues from the last finished epoch and
ends with the weights of an uninterrupted run. --overwrite starts over. The program is
`attr_robust_tf.cli.train`, which the installed package also runs (`attr-robust-train`).
"""
from attr_robust_tf.cli import train

if __name__ == "__main__":
    train.run()
