"""The shared flags and runtime setup of the tools, kept importable here: `attr_robust_tf.cli.common`."""
from attr_robust_tf.cli.common import (  # noqa: F401
    FLAGS,
    STRATEGIES,
    default_workdir,
    define_common_flags,
    parse_flags,
    setup_runtime,
)
