"""Cost of the logit methods from the teacher-output cache (issue 11): seconds per training epoch of the plain
student and of KD, DKD, DIST, CLKD, KD+LS and SDD with the teacher's logits (SDD: regional logits) replayed from the cache (filled once
beforehand; fill time reported separately), and of MLKD (two views per item: its epoch counts as two) with its live
teacher and from the cache (the weak view's logits and those of 8 pre-drawn strong views per item,
`CachedMLKDCallback`). One run, interleaved repeats (median), so the ratios to the plain epoch are what counts.

    python bench/logit_cost.py --fraction 0.1 --repeats 2 --threads 1

Target: every cached method's epoch <= 1.25 x the plain epoch, MLKD's per view (epoch / 2). The teacher is untrained:
the cost does not depend on the weights."""
import argparse, platform, statistics, sys, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import torch
import pandas as pd
from fastai.learner import Learner
from fastai.torch_core import set_seed
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.registry import method_callback
from kd_fastai.experiments.runs import EpochTimer, to_markdown

CACHED = ('kd', 'dkd', 'dist', 'clkd', 'kd+ls', 'sdd')  # SDD: its regional logits (C x N per item), in a folder of its own


def epoch_time(dls, student, cb=None):
    "One training epoch of a fresh student, with the callback `cb` (None: plain)"
    set_seed(0)
    learn, timer = Learner(dls, zoo_model(student, in_channels=1)), EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[timer] + ([cb] if cb is not None else []))
    return timer.times[0]


def main(teacher='cifar_resnet56', student='cifar_resnet20', fraction=0.1, bs=128, repeats=2, threads=1,
         out='results/logit_cost'):
    if threads: torch.set_num_threads(threads)
    dls = fashion_mnist_dls(bs=bs, fraction=fraction, seed=0, val_bs=512)
    set_seed(1)
    t_model = zoo_model(teacher, in_channels=1)
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d)/'cache'
        make = {m: (lambda m=m: method_callback(m, t_model, cache=True, path=cache/('sdd' if m == 'sdd' else 'logits'),
                                                valid_metrics=False, verbose=False)) for m in CACHED}
        make['mlkd'] = lambda: method_callback('mlkd', t_model, valid_metrics=False)
        make['mlkd cached'] = lambda: method_callback('mlkd', t_model, cache=True, path=cache/'mlkd', valid_metrics=False, verbose=False)
        fill_cb = make['kd']()
        epoch_time(dls, student, fill_cb)  # fills the cache (also the warm-up run)
        fill = fill_cb.caches['train'].fill_seconds
        sdd_cb = make['sdd']()
        epoch_time(dls, student, sdd_cb)  # fills SDD's cache of regional logits
        fill_sdd = sdd_cb.caches['train'].fill_seconds
        mlkd_cb = make['mlkd cached']()
        epoch_time(dls, student, mlkd_cb)  # fills MLKD's cache (weak view + 8 strong views per item)
        fill_mlkd = mlkd_cb.caches['train'].fill_seconds
        names = ['plain'] + list(CACHED) + ['mlkd cached', 'mlkd']
        times = {n: [] for n in names}
        for r in range(repeats):  # interleaved, the order rotated, so that background load affects all alike
            for n in names[r % len(names):] + names[:r % len(names)]:
                times[n].append(epoch_time(dls, student, None if n == 'plain' else make[n]()))
                print(f"repeat {r}: {n} {times[n][-1]:.2f} s", flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    label = {'plain': 'plain student', **{m: f"{m.upper()} from the cache" for m in CACHED},
             'mlkd cached': 'MLKD from the cache (2 views)', 'mlkd': 'MLKD, live teacher (2 views)'}
    rows = [dict(method=n, measure=label[n], sec_per_epoch=round(med[n], 2), x_plain=round(med[n] / med['plain'], 3),
                 runs=' '.join(f'{x:.2f}' for x in times[n])) for n in names]
    for n, what in (('mlkd cached', 'from the cache'), ('mlkd', 'live teacher')):
        rows.append(dict(method=f'{n}/2', measure=f'MLKD {what}, per view (epoch / 2)', sec_per_epoch=round(med[n] / 2, 2),
                         x_plain=round(med[n] / 2 / med['plain'], 3), runs=''))
    rows.append(dict(method='fill', measure='cache fill (once, train set)', sec_per_epoch=round(fill, 2),
                     x_plain=round(fill / med['plain'], 3), runs=''))
    rows.append(dict(method='fill sdd', measure="SDD's cache fill (once, train set, regional logits)", sec_per_epoch=round(fill_sdd, 2),
                     x_plain=round(fill_sdd / med['plain'], 3), runs=''))
    rows.append(dict(method='fill mlkd', measure="MLKD's cache fill (once, train set, weak + 8 strong views)",
                     sec_per_epoch=round(fill_mlkd, 2), x_plain=round(fill_mlkd / med['plain'], 3), runs=''))
    df = pd.DataFrame(rows)
    cmd = (f"python bench/logit_cost.py --teacher {teacher} --student {student} --fraction {fraction} --bs {bs} "
           f"--repeats {repeats} --threads {threads}")
    worst = max([med[m] / med['plain'] for m in CACHED] + [med['mlkd cached'] / 2 / med['plain']])
    text = (f"# Logit methods from the teacher-output cache: cost per epoch\n\nCommand: `{cmd}`\n\n"
            f"Teacher {teacher} ({count_parameters(t_model):,} params, untrained: timing only), student {student} "
            f"({count_parameters(zoo_model(student, in_channels=1)):,} params), Fashion-MNIST {len(dls.train_ds):,} training "
            f"images, batch {bs}, {torch.get_num_threads()} CPU thread(s), torch {torch.__version__}, "
            f"{platform.processor() or platform.machine()}. Seconds of the training phase of one epoch (median of "
            f"{repeats} interleaved repeats; the cache's setup/reuse at the start of a fit is not timed; the fill is).\n\n"
            + to_markdown(df.drop(columns='method')) +
            f"\n\nWorst cached method: **{worst:.3f} x** the plain epoch (target <= 1.25; MLKD per view). MLKD from the "
            f"cache: {med['mlkd cached'] / med['plain']:.2f} x plain for its two views, "
            f"{med['mlkd cached'] / 2 / med['plain']:.2f} x per view; with its teacher live on both views "
            f"{med['mlkd'] / med['plain']:.2f} x, {med['mlkd'] / 2 / med['plain']:.2f} x per view.\n")
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f'{out}.md').write_text(text)
        df.assign(command=cmd).to_csv(f'{out}.csv', index=False)
    return df


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default='cifar_resnet56')
    p.add_argument('--student', default='cifar_resnet20')
    p.add_argument('--fraction', type=float, default=0.1)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default='results/logit_cost')
    main(**vars(p.parse_args()))
