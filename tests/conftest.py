"""Test-session setup: runs before TensorFlow initialises its devices."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so tf.distribute tests can run MirroredStrategy on one machine.
# Must happen before any op runs (docs/stack.md §3 item 13).
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
    pass

import keras  # noqa: E402

keras.config.disable_traceback_filtering()


def pytest_addoption(parser):
    parser.addoption("--run_slow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--run_gpu", action="store_true", default=False, help="run tests marked gpu")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase.test_session is a context manager, not a test
    items[:] = [item for item in items if item.name != "test_session"]
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run_slow"):
            item.add_marker(pytest.mark.skip(reason="slow test: pass --run_slow to run it"))
        if "gpu" in item.keywords and not (config.getoption("--run_gpu") and has_gpu):
            item.add_marker(pytest.mark.skip(reason="needs a GPU and --run_gpu"))
