"""attr_robust_tf: attributionally robust training, attribution attacks and evaluation (Keras 3 / TF)."""
import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        "attr_robust_tf needs the TensorFlow backend of Keras 3 (nested tf.GradientTape for double "
        f"backprop). Received: KERAS_BACKEND={_backend!r}. Set KERAS_BACKEND=tensorflow before importing.")

import keras as _keras  # noqa: E402

if _keras.config.backend() != "tensorflow":
    raise ImportError(
        "attr_robust_tf needs the TensorFlow backend of Keras 3. Received: keras.config.backend()="
        f"{_keras.config.backend()!r} (from ~/.keras/keras.json). Set KERAS_BACKEND=tensorflow.")

from attr_robust_tf import data, models, objectives, penalties, regularizers, scores, terms  # noqa: E402
from attr_robust_tf.attacks import AttackEnsemble, AttackResult, AttributionAttack, InnerAttack, pgd_linf  # noqa: E402
from attr_robust_tf.attributions import (  # noqa: E402
    input_x_gradient,
    integrated_gradients,
    saliency,
    saliency_map,
    smoothgrad,
)
from attr_robust_tf.diagnostics import RegularizerInfluence, regularizer_influence  # noqa: E402
from attr_robust_tf.evaluation import RobustnessCallback, RobustnessReport, evaluate_robustness  # noqa: E402
from attr_robust_tf.export import export_saved_model  # noqa: E402
from attr_robust_tf.metrics import (  # noqa: E402
    CenterOfMassShift,
    KendallTau,
    SpearmanRho,
    TopKIntersection,
    center_of_mass_shift,
    kendall_tau,
    lens_topk,
    spearman_rho,
    topk_intersection,
)
from attr_robust_tf.models import softplus_surrogate  # noqa: E402
from attr_robust_tf.protocols import get_protocol  # noqa: E402
from attr_robust_tf.robust_model import RobustModel  # noqa: E402
from attr_robust_tf.schedules import EpsilonSchedule  # noqa: E402
from attr_robust_tf.settings import RobustSettings  # noqa: E402
from attr_robust_tf.version import __version__  # noqa: E402

__all__ = [
    "__version__",
    # modules
    "data",
    "models",
    "objectives",
    "penalties",
    "regularizers",
    "scores",
    "terms",
    # attributions
    "integrated_gradients",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "saliency_map",
    # metrics
    "topk_intersection",
    "kendall_tau",
    "spearman_rho",
    "center_of_mass_shift",
    "lens_topk",
    "TopKIntersection",
    "KendallTau",
    "SpearmanRho",
    "CenterOfMassShift",
    # attacks
    "pgd_linf",
    "AttributionAttack",
    "AttackResult",
    "AttackEnsemble",
    "InnerAttack",
    # training
    "RobustModel",
    "RobustSettings",
    "EpsilonSchedule",
    "softplus_surrogate",
    "regularizer_influence",
    "RegularizerInfluence",
    # evaluation and export
    "evaluate_robustness",
    "RobustnessReport",
    "RobustnessCallback",
    "get_protocol",
    "export_saved_model",
]
