"""Feature-based KD methods on Fashion-MNIST: FitNet, AT, RKD, CRD, CRD+KD, OFD, OFD+KD, ReviewKD per teacher -> student pair.

The same protocol and code as `bench/logit_methods.py` (its data split, teachers, held-out epoch choice, seeds and
table), with the feature methods' rows: every method takes the authors' defaults of its `kd_fastai` callback
(`kd_fastai.core.registry.METHODS`; '+KD' adds KD with weight 1 at T = 4 as RepDistiller's `-a 1`). The feature methods need
the teacher's feature maps, so the teacher runs at every step (no teacher-output cache). The baseline and KD rows of
the same pairs come from the logit table's runs (same command line but the methods): pass their CSV to `--from-csv`.

    python bench/feature_methods.py --pairs cifar_resnet56:cifar_resnet20 --seeds 3 --epochs 6 --fraction 0.06 --teacher-fraction 0.15 --teacher-epochs 6 --threads 1 --out results/feature_methods_runs/feature_methods_resnet56_resnet20
    python bench/feature_methods.py --fraction 0.02 --epochs 1 --teacher-epochs 1 --seeds 1 --out /tmp/fm_smoke   # a smoke test
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import main, FEATURE_METHODS

DEFAULTS = dict(methods=list(FEATURE_METHODS), out='results/feature_methods', title='Feature-based KD methods on Fashion-MNIST')

if __name__ == '__main__': main(defaults=DEFAULTS, script='bench/feature_methods.py')
