"""Cost of KDCallback: seconds per training epoch of the plain student, of the teacher's forward pass alone, and of
the student trained with KDCallback, measured in one run (interleaved repeats, median) on Fashion-MNIST.

    .venv/bin/python bench/kd_epoch.py [--teacher model_340k_wo_dw] [--student model_25k_wo_dw] [--fraction 0.25]

Target (issue 3): KD epoch <= 1.10 x (plain epoch + teacher forward epoch)."""
import argparse, statistics, time, platform
from pathlib import Path
import torch
from fastai.learner import Learner
from fastai.torch_core import set_seed
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.teacher import FrozenTeacher
from kd_fastai.core.kd import KDCallback
from kd_fastai.experiments.runs import EpochTimer, to_markdown
import pandas as pd


def plain_epoch(dls, student):
    learn, timer = Learner(dls, zoo_model(student, in_channels=1)), EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=timer)
    return timer.times[0]


def kd_epoch(dls, student, teacher):
    learn, timer = Learner(dls, zoo_model(student, in_channels=1)), EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[timer, KDCallback(teacher, valid_metrics=False)])
    return timer.times[0]


def teacher_epoch(dls, teacher):
    "One pass of FrozenTeacher over the training batches (what KDCallback adds per epoch)"
    t = FrozenTeacher(teacher).freeze()
    t0 = time.perf_counter()
    for xb, yb in dls.train: t(xb)
    elapsed = time.perf_counter() - t0
    t.restore()
    return elapsed


def main(teacher='model_340k_wo_dw', student='model_25k_wo_dw', fraction=0.25, bs=128, repeats=3, threads=1,
         out='results/kd_epoch.md'):
    if threads: torch.set_num_threads(threads)
    set_seed(0)
    dls = fashion_mnist_dls(bs=bs, fraction=fraction, seed=0)
    t_model = zoo_model(teacher, in_channels=1)
    plain_epoch(dls, student)  # warm-up (allocator, first-call overheads)
    times = {'plain student': [], 'teacher forward': [], 'student + KDCallback': []}
    for _ in range(repeats):  # interleaved so that background load affects all three alike
        times['plain student'].append(plain_epoch(dls, student))
        times['teacher forward'].append(teacher_epoch(dls, t_model))
        times['student + KDCallback'].append(kd_epoch(dls, student, t_model))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med['student + KDCallback'] / (med['plain student'] + med['teacher forward'])
    df = pd.DataFrame([{'measure': k, 'sec/epoch (median)': round(v, 2), 'runs': ', '.join(f'{x:.2f}' for x in times[k])}
                       for k, v in med.items()])
    cmd = (f"python bench/kd_epoch.py --teacher {teacher} --student {student} --fraction {fraction} --bs {bs} "
           f"--repeats {repeats} --threads {threads}")
    text = (f"# KDCallback cost per epoch\n\nCommand: `{cmd}`\n\n"
            f"Teacher {teacher} ({count_parameters(t_model):,} params), student {student}, "
            f"{len(dls.train_ds):,} training images, batch {bs}, {torch.get_num_threads()} CPU thread(s), "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}.\n\n"
            + to_markdown(df) + f"\n\nKD epoch / (plain epoch + teacher forward) = **{ratio:.3f}** (target <= 1.10)\n")
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return ratio


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default='model_340k_wo_dw')
    p.add_argument('--student', default='model_25k_wo_dw')
    p.add_argument('--fraction', type=float, default=0.25)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default='results/kd_epoch.md')
    main(**vars(p.parse_args()))
