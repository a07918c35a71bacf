"""Arithmetic of the feature methods (issue 12): floating-point operations of one training step of each method
(convolutions and matrix products: forward and backward of the student and its connectors, the teacher's forward),
counted by `torch.utils.flop_counter.FlopCounterMode`, against a plain step plus one teacher forward pass.

    python bench/feature_flops.py

This is the floor under `bench/feature_cost.py`'s measured time ratio: a method whose extra modules add X % of the
reference's convolution work cannot cost less than 1 + X/100 times it, whatever the implementation; elementwise work
(BatchNorm, ReLU, upsampling, the losses) comes on top and is not counted here. The count does not depend on the
weights or the hardware, so it takes a few seconds and any machine gives the same table."""
import argparse, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import torch
import pandas as pd
from torch.utils.flop_counter import FlopCounterMode
from fastai.learner import Learner
from fastai.callback.core import Callback, CancelFitException
from fastai.torch_core import set_seed
from kd_fastai.data.core import synthetic_dls
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.registry import method_callback
from kd_fastai.experiments.runs import to_markdown

METHODS = ('fitnet', 'at', 'rkd', 'crd', 'ofd', 'reviewkd')


class CountStepFlops(Callback):
    "Counts the operations of the second training batch (the first one builds the connectors), then stops the fit"
    order = -100
    def before_batch(self):
        if self.training and self.iter == 1: self.mode = FlopCounterMode(display=False); self.mode.__enter__()
    def after_batch(self):
        if getattr(self, 'mode', None) is not None:
            self.mode.__exit__(None, None, None); self.flops = self.mode.get_total_flops(); self.mode = None
            raise CancelFitException  # the fit ends here (and every callback's after_fit runs)


def step_flops(dls, student, cb=None)->int:
    "Operations of one training step of a fresh `student` (with the callback `cb`)"
    set_seed(0)
    counter = CountStepFlops()
    learn = Learner(dls, zoo_model(student, in_channels=1, num_classes=dls.c))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[counter] + ([cb] if cb is not None else []))
    return counter.flops


def teacher_flops(dls, teacher)->int:
    "Operations of one teacher forward pass over a training batch (eval mode, no gradient)"
    x, _ = dls.train.one_batch()
    with torch.no_grad(), FlopCounterMode(display=False) as mode: teacher.eval()(x)
    return mode.get_total_flops()


def main(teacher='cifar_resnet56', student='cifar_resnet20', bs=128, size=28, out='results/feature_flops'):
    dls = synthetic_dls(n_train=3 * bs, n_valid=bs, n_classes=10, size=size, channels=1, bs=bs)
    t_model = zoo_model(teacher, in_channels=1, num_classes=10)
    plain, tf = step_flops(dls, student), teacher_flops(dls, t_model)
    rows = [dict(measure='plain student step', GFLOP=plain / 1e9, ratio=plain / (plain + tf)),
            dict(measure='teacher forward, same batch', GFLOP=tf / 1e9, ratio=tf / (plain + tf))]
    for m in METHODS:
        f = step_flops(dls, student, method_callback(m, t_model))
        rows.append(dict(measure=f'{m} step', GFLOP=f / 1e9, ratio=f / (plain + tf)))
    df = pd.DataFrame(rows).round(3).rename(columns={'ratio': 'x (plain + teacher)'})
    cmd = f"python bench/feature_flops.py --teacher {teacher} --student {student} --bs {bs} --size {size}"
    text = (f"# Feature methods: operations per training step\n\nCommand: `{cmd}`\n\n"
            f"Teacher {teacher} ({count_parameters(t_model):,} params), student {student}, batch {bs} of {size}x{size} "
            "one-channel images. Floating-point operations of convolutions and matrix products (`FlopCounterMode`), "
            "forward and backward, one training step after the connectors are built; elementwise work is not counted. "
            "The ratio is a floor under the time ratio of `feature_cost.md`.\n\n" + to_markdown(df) + "\n")
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f'{out}.md').write_text(text)
    return df


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default='cifar_resnet56')
    p.add_argument('--student', default='cifar_resnet20')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--size', type=int, default=28)
    p.add_argument('--out', default='results/feature_flops')
    main(**vars(p.parse_args()))
