"""Issue 13's patient protocol: every distillation recipe of the library on all of Fashion-MNIST, from a shipped teacher.

The code and table of `bench/logit_methods.py` (held-out best epoch, test accuracy at that epoch, seeds 0..n-1,
per-seed rows in the CSV) with these defaults: the shipped teacher `model_340k_wo_dw` (trained on all 60,000 images,
shipped with its training route for RCO) -> the student `model_25k_wo_dw`; all the training images but a stratified
10% held out; 20 epochs; the student alone, KD (teacher-output cache, 8 views), a TAKD chain through
`model_143k_wo_dw`, RCO with equal epochs per anchor and with the paper's greedy search, CS-KD, Tf-KD self-training
and the Tf-KD virtual teacher; `--resume`, so that a run stopped by the end of a session goes on where it stopped.

    python bench/train_teachers.py model_340k_wo_dw --epochs 10 --route-every 2 --threads 1   # first: ship the teacher and its route (not shipped yet)
    python bench/patient.py --threads 1
    python bench/patient.py --pairs model_143k_wo_dw:model_25k_wo_dw --fraction 0.02 --epochs 1 --seeds 1 --methods baseline KD --out /tmp/patient_smoke   # a smoke test
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import main

DEFAULTS = dict(pairs=['model_340k_wo_dw:model_25k_wo_dw'], assistant='model_143k_wo_dw', shipped_teachers=True, resume=True,
                fraction=1.0, epochs=20, seeds=3, out='results/patient',
                methods=['baseline', 'KD', 'TAKD', 'RCO', 'RCO greedy', 'CS-KD', 'Tf-KD self', 'Tf-KD virtual'],
                title='Every distillation recipe on all of Fashion-MNIST, from a shipped teacher (patient protocol)')

if __name__ == '__main__': main(defaults=DEFAULTS, script='bench/patient.py')
