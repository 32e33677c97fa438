#!/usr/bin/env bash
# Installs the offline Fashion-MNIST files from Debian's `dataset-fashion-mnist` package.
# Idempotent: does nothing when the files are already there. Without root it explains the alternative.
set -euo pipefail
dir="${1:-/usr/share/datasets/fashion-mnist}"
if [ -f "$dir/t10k-labels-idx1-ubyte.gz" ] && [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  cat >&2 <<MSG
[attr_robust_tf] Skipping the Fashion-MNIST install: 'apt-get install dataset-fashion-mnist' needs root.
  Either run as root:   sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist
  or place the four official IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
  t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder DIR/fashion_mnist/ and set
  ATTR_ROBUST_DATA=DIR (or pass data_dir= to attr_robust_tf.data.load).
MSG
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q dataset-fashion-mnist >/dev/null
fi
echo "[attr_robust_tf] Installed Fashion-MNIST into $dir"
