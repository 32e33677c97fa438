"""attr_robust_tf: attributionally robust training and evaluation for Keras 3 / TensorFlow."""
import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
version = {}
with open(os.path.join(here, "attr_robust_tf", "version.py")) as f:
    exec(f.read(), version)

setup(
    name="attr_robust_tf",
    version=version["__version__"],
    description="Attributionally robust training, attribution attacks and evaluation for Keras 3 / TensorFlow",
    long_description=open(os.path.join(here, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["attr_robust_tf", "attr_robust_tf.*"]),
    python_requires=">=3.10",
    # `python -m attr_robust_tf.cli.train` as a command; its configs ship in attr_robust_tf/configs/
    entry_points={"console_scripts": ["attr-robust-train = attr_robust_tf.cli.train:run"]},
    # Ranges, not pins: requirements.txt holds the exact set tested together.
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",  # compute_loss(..., training=) arrived in Keras 3.3
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=10",
        "matplotlib>=3.7",  # the figures of RESULTS.md and the Pareto search
        "absl-py>=1.4",
        "ml-collections>=0.1.1",
        "tqdm>=4.60",
    ],
    extras_require={
        "tune": ["keras-tuner>=1.4", "tensorboard>=2.16"],
        "tfds": ["tensorflow-datasets>=4.9", "importlib_resources>=6", "etils>=1.5"],
        # other explainers under attack (docs/evaluation.md): xplique needs TensorFlow Probability
        "xplique": ["xplique>=1.0", "tensorflow-probability>=0.24"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "tf-explain>=0.3.1",
            "opencv-python-headless>=4.8",
            "tensorboard>=2.16",
        ],
    },
    classifiers=["Programming Language :: Python :: 3", "Framework :: Keras"],
)
