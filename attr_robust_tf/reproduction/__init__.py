"""Reproduction of the papers' comparison: every objective trained and evaluated with one protocol.

Sarkar et al. 2021 (arXiv 2012.14395, abstract) claim a 3–9 % gain in attribution robustness over the best earlier
methods on MNIST, Fashion-MNIST, Flower and GTSRB; RAR (Chen et al. 2019, arXiv 1905.09957) Table 1 gives the
earlier rows. This package measures the comparison itself. For each dataset × objective ("cell") it trains if the
model is missing, evaluates if the report is missing (resumable chunk by chunk), then collects everything into
`RESULTS.md` with matplotlib figures. `tools/reproduce.py` and `tools/demo.py` are thin front ends.

Modules, by what they do:

    names         datasets, objectives and ablation variants, scales, configs of a cell
    cells         running cells: train if missing, evaluate if missing
    records       reading a cell back: result, per-image values, convergence record, wall times, finished or not
    comparisons   statistics of comparisons: paired differences with a bootstrap interval over the same images
    structure     why a pixel top-k is what it is: map concentration, block top-k, one-pixel first-layer filters,
                  first max-pool winner switches
    counterfactual the black-patch counterfactual: just-below-ε first-layer filters moved above ε, attacked again
    tables        Markdown tables: results, LENS, evaluation differences, settings, convergence, map structure
    claims        the sentences about the claim, generated from the paired (or per-model) numbers
    pages         assembling RESULTS.md and the demo report from the tables, claims and figures
    figures       matplotlib figures: bars with intervals, paired differences, Pareto fronts

Every public name is importable from `attr_robust_tf.reproduction`.
"""
from attr_robust_tf import config_utils, data, evaluation, evaluation_report, experiment, protocols  # noqa: F401
from attr_robust_tf.reproduction.cells import reproduce, run_cell  # noqa: F401
from attr_robust_tf.reproduction.records import (PER_IMAGE, cell_protocol, convergence, file_sha256,  # noqa: F401
                                                 finished_cell, finished_cells, per_image)
from attr_robust_tf.reproduction.comparisons import PAIRED_METRICS, paired_comparisons, paired_difference  # noqa
from attr_robust_tf.reproduction.figures import (CHART_METRICS, PALETTE, bar_chart, fronts_figure,  # noqa: F401
                                                 paired_figure, pareto_figure, results_figure, save_figure)
from attr_robust_tf.reproduction.names import (ALIASES, BASE_OBJECTIVES, BASELINE, CONFIG_ARGS,  # noqa: F401
                                               CONFIG_DIR, DATASETS, EARLIER, OBJECTIVE_TITLES, OBJECTIVES,
                                               RAR_TABLE1, SCALES, STUDY_IMAGES, STUDY_OBJECTIVES, TITLES,
                                               cell_dir, check_prefixes, entries_for, entry_dataset, is_sarkar,
                                               load_config, parse_datasets, parse_objectives, split_entry, title)
from attr_robust_tf.reproduction.claims import paired_claim, verdict  # noqa: F401
from attr_robust_tf.reproduction.pages import EXPECTED_RUNTIME, format_results, write_demo_report, write_results  # noqa
from attr_robust_tf.reproduction.structure import (background_levels, black_mass, checkpoint_levels,  # noqa: F401
                                                   block_topk_intersection, first_conv_peak_share,
                                                   first_conv_threshold, first_pool_switches, map_structure,
                                                   mass_support)
from attr_robust_tf.reproduction.counterfactual import black_patch, raise_background_levels  # noqa: F401
from attr_robust_tf.reproduction.tables import TARGETS, results_table  # noqa: F401

__all__ = ["DATASETS", "OBJECTIVES", "SCALES", "RAR_TABLE1", "parse_datasets", "parse_objectives", "split_entry",
           "entries_for", "entry_dataset", "check_prefixes",
           "title", "load_config", "cell_dir", "run_cell", "reproduce", "results_table", "format_results", "bar_chart",
           "write_results", "write_demo_report", "finished_cells", "paired_difference", "paired_comparisons",
           "results_figure", "paired_figure", "pareto_figure", "fronts_figure", "map_structure",
           "block_topk_intersection", "mass_support", "first_conv_peak_share", "first_conv_threshold",
           "first_pool_switches", "background_levels", "black_mass", "black_patch", "raise_background_levels"]
