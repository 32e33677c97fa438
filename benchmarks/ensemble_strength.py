"""Extra strength of the attack ensemble over the top-k attack alone, paired over the same images.

  PYTHONPATH=$PWD python benchmarks/ensemble_strength.py --model=runs/x/model.keras --protocol=fmnist:cpu \
      --workdir=/tmp/strength [--limit=100]

Evaluates `<protocol>` (the top-k attack) and the same protocol with `ensemble=DEFAULT_ENSEMBLE` on the same
images (chunks saved under --workdir, so an interrupted run resumes), and prints, over the images both attacks
found a label-preserving iterate for, the mean drop (ensemble − top-k) of Kendall's τ, top-k intersection and
3-LENS-recall@k, with 95 % percentile-bootstrap intervals of the paired mean, and the ensemble's win counts.
"""
import argparse
import json
import os

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--protocol", default="fmnist:cpu")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    import keras

    from attr_robust_tf import evaluation, models, protocols, robust_model  # noqa: F401 (registers classes)

    base = protocols.get_protocol(args.protocol)
    if args.limit:
        base = base.replace(num_images=args.limit)
    model = keras.models.load_model(args.model, compile=False)
    reports = {}
    for label, protocol in (("topk", base), ("ensemble", base.replace(ensemble=protocols.DEFAULT_ENSEMBLE))):
        dataset = evaluation.protocol_dataset(protocol)
        reports[label] = evaluation.evaluate_robustness(
            model, dataset, protocol, chunk_dir=os.path.join(args.workdir, label, "chunks"))
    one, ens = reports["topk"].examples, reports["ensemble"].examples
    both = one["found"] & ens["found"] & one["clean_correct"]
    out = {"model": args.model, "protocol": base.name, "images": int(len(one["index"])),
           "attacked": int(one["clean_correct"].sum()), "paired": int(both.sum()),
           "failed_topk": int(np.sum(one["clean_correct"] & ~one["found"])),
           "failed_ensemble": int(np.sum(ens["clean_correct"] & ~ens["found"])),
           "ensemble_wins": reports["ensemble"].ensemble_wins}
    for name in ("kendall", "topk", "spearman", "lens_topk"):
        diff = ens[name][both].astype(np.float64) - one[name][both]
        lo, hi = evaluation.bootstrap_interval(diff, samples=1000, seed=0)
        out[name] = {"topk_attack": float(np.mean(one[name][both])), "ensemble": float(np.mean(ens[name][both])),
                     "drop": float(np.mean(diff)), "ci_low": lo, "ci_high": hi}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
