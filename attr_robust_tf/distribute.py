"""`tf.distribute` helpers: logical CPUs, strategy by name, global-batch check (docs/conventions.md §5, docs/stack.md §6).

Two logical CPU devices let `MirroredStrategy` run two replicas on one machine; a 2-replica run then equals
the single-device run when every loss term is scaled as in docs/conventions.md §5.
"""
import difflib

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def configure_logical_cpus(n):
    """Splits the first physical CPU into `n` logical devices; `n = 0` leaves the devices alone.

    Must run before TensorFlow executes any op (docs/stack.md §3 item 13). Calling it again with the count that
    is already configured is a no-op, so tools and tests can both call it.

    Returns:
        The number of logical CPU devices now visible.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"`logical_cpus` must be an integer >= 0. Received: logical_cpus={n!r}.")
    cpus = tf.config.list_physical_devices("CPU")
    if n == 0:
        return len(tf.config.list_logical_devices("CPU"))
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return n
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as error:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return n
        raise RuntimeError(
            f"`logical_cpus` must be set before TensorFlow runs its first op. Received: logical_cpus={n} "
            f"with {have} logical CPU device(s) already initialised. Call configure_logical_cpus() (or "
            "tools.common.setup_runtime) first thing in the process.") from error
    return n


def make_strategy(name="default"):
    """Returns the `tf.distribute.Strategy` called `name`: "default", "mirrored" or "multi_worker".

    * "default": the current (no-op) strategy, one replica.
    * "mirrored": `MirroredStrategy` over every GPU, or over every logical CPU when there is no GPU (a plain
      `MirroredStrategy()` would give one replica on CPU, docs/stack.md §6).
    * "multi_worker": `MultiWorkerMirroredStrategy`, configured from the `TF_CONFIG` environment variable;
      without `TF_CONFIG` it is a single local worker.
    """
    if name not in STRATEGIES:
        close = difflib.get_close_matches(str(name), STRATEGIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown strategy {name!r}.{hint} Available: {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_global_batch(batch, strategy):
    """Raises ValueError unless the global batch splits evenly over the strategy's replicas (docs/conventions.md §5)."""
    replicas = strategy.num_replicas_in_sync
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch!r}.")
    if batch % replicas:
        lower = batch - batch % replicas
        raise ValueError(
            f"`batch_size` must be divisible by the number of replicas ({replicas}). Received: "
            f"batch_size={batch}. Use {lower or replicas} or {lower + replicas}, so each replica gets the same "
            "number of examples and the per-replica loss scaling is exact.")
    return batch // replicas


def is_chief(strategy=None):
    """True when this worker writes files: always, except on non-chief workers of a multi-worker run."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    spec = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    # Without a "chief" job, worker 0 is the chief (the TF_CONFIG convention).
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec
