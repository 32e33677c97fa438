"""The shared flags and runtime setup of the tools: `attr_robust_tf.cli.common` (kept importable here)."""
from attr_robust_tf.cli.common import *  # noqa: F401,F403
from attr_robust_tf.cli.common import FLAGS, STRATEGIES, default_workdir, define_common_flags  # noqa: F401
from attr_robust_tf.cli.common import parse_flags, setup_runtime  # noqa: F401
