"""Speed of kd_fastai's fastai loaders (`TensorImageDL`, a `TfmdDL` with a fast batch path) against the previous
`TensorBatchDL` (a plain fastai `DataLoader`, defined below as it was), in one run:
seconds of a plain training epoch of the same student on the same batches, and of a bare pass over the training loader.
Repeats are interleaved (the order alternates) and the medians compared.

    .venv/bin/python bench/loaders.py [--fraction 0.25] [--model model_25k_wo_dw] [--repeats 3] [--threads 1]

Target (issue 10): new epoch <= 1.10 x old epoch."""
import argparse, platform, random, statistics, time
from pathlib import Path
import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.torch_core import set_seed
from fastai.data.load import DataLoader
from fastai.torch_core import TensorImage, TensorCategory
from kd_fastai.data.core import fashion_mnist_dls, image_stats, prepare_images, FMNIST_MEAN, FMNIST_STD
from kd_fastai.models.zoo import zoo_model
from kd_fastai.experiments.runs import EpochTimer, to_markdown


class TensorBatchDL(DataLoader):
    "The loader kd_fastai used before 0.2 (kept here for this comparison): fastai `DataLoader` over a `TensorImageData`, batches by one tensor indexing, `prepare_images` per batch"
    n_inp = 1
    def __init__(self, dataset=None, augment=False, size=None, channels=None, mean=None, std=None, bs=64, **kwargs):
        if not (hasattr(dataset, 'x') and hasattr(dataset, 'y')):
            raise TypeError(f"TensorBatchDL needs a data set with uint8 images `.x` and labels `.y` (a `TensorImageData`), got {type(dataset).__name__}")
        if mean is None or std is None:
            m, s = image_stats(dataset.x)
            mean, std = (m if mean is None else mean), (s if std is None else std)
        self.augment, self.size, self.channels, self.mean, self.std = augment, size, channels, mean, std
        super().__init__(dataset, bs=bs, **kwargs)

    @property
    def labels(self): return self.dataset.y
    def create_item(self, s): return s
    def create_batch(self, b):
        idx = torch.as_tensor(b, dtype=torch.long)
        return self.dataset.x[idx], TensorCategory(self.dataset.y[idx])
    def retain(self, res, b): return res
    def after_batch(self, b):
        gen = torch.Generator().manual_seed(self.rng.getrandbits(63)) if self.augment else None
        x = prepare_images(b[0], self.mean, self.std, self.size, self.channels, self.augment, gen)
        return (TensorImage(x), *b[1:])
    def new(self, dataset=None, cls=None, **kwargs):
        "A new loader of the same kind, keeping this one's settings unless overridden in `kwargs`"
        kw = dict(augment=self.augment, size=self.size, channels=self.channels, mean=self.mean, std=self.std)
        return super().new(dataset=dataset, cls=cls, **{**kw, **kwargs})


def loaders(fraction, bs, augment):
    "`(old, new)` DataLoaders over the same training subset and test set"
    new = fashion_mnist_dls(bs=bs, fraction=fraction, seed=0, augment=augment, device='cpu')
    trn = TensorBatchDL(new.train_ds, bs=bs, shuffle=True, drop_last=True, augment=augment, mean=FMNIST_MEAN, std=FMNIST_STD)
    old = DataLoaders(trn, trn.new(new.valid_ds, shuffle=False, drop_last=False, augment=False), device='cpu')
    return old, DataLoaders(new.train, new.valid, device='cpu')


def same_order(dls, seed):
    "Reset the shuffling of `dls.train`, so that both kinds of loader draw the same batches"
    dls.train.rng = random.Random(seed)
    return dls


def train_epoch(dls, model_name, seed):
    set_seed(0)  # the same initial weights for both loaders
    learn, timer = Learner(same_order(dls, seed), zoo_model(model_name, in_channels=1)), EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=timer)
    return timer.times[0]


def iterate(dls, seed):
    "Seconds of one pass over the training loader (batch making + batch transforms, no model)"
    dl = same_order(dls, seed).train
    t0 = time.perf_counter()
    for b in dl: pass
    return time.perf_counter() - t0


def main(fraction=0.25, model='model_25k_wo_dw', bs=128, repeats=3, threads=1, augment=False, out='results/loaders'):
    if threads: torch.set_num_threads(threads)
    dls = dict(zip(('TensorBatchDL (old)', 'TensorImageDL (new)'), loaders(fraction, bs, augment)))
    bo, bn = [next(iter(same_order(d, 1).train)) for d in dls.values()]  # the same batches (up to float rounding)
    assert torch.equal(bo[1], bn[1]) and (augment or torch.allclose(bo[0], bn[0], atol=1e-5)), "the loaders' batches differ"
    for k, d in dls.items(): train_epoch(d, model, 0)  # warm-up (allocator, first-call overheads)
    times = {(k, m): [] for k in dls for m in ('training epoch', 'loader pass')}
    for r in range(repeats):  # interleaved, alternating order, so that background load affects both alike
        for k in (list(dls) if r % 2 == 0 else list(dls)[::-1]):
            times[k, 'training epoch'].append(train_epoch(dls[k], model, r))
            times[k, 'loader pass'].append(iterate(dls[k], r))
    rows = [{'loader': k, 'measure': m, 'sec (median)': f'{statistics.median(v):.3f}', 'runs': ', '.join(f'{x:.3f}' for x in v)}
            for (k, m), v in times.items()]
    med = {km: statistics.median(v) for km, v in times.items()}
    old, new = list(dls)
    ratio = {m: med[new, m] / med[old, m] for m in ('training epoch', 'loader pass')}
    for row in rows: row['new / old'] = f"{ratio[row['measure']]:.3f}" if row['loader'] == new else ''
    df = pd.DataFrame(rows)
    cmd = (f"python bench/loaders.py --fraction {fraction} --model {model} --bs {bs} --repeats {repeats} --threads {threads}"
           + (' --augment' if augment else ''))
    text = (f"# Loader speed: TensorImageDL (fastai TfmdDL) vs the previous TensorBatchDL\n\nCommand: `{cmd}`\n\n"
            f"Model {model}, {len(dls[new].train_ds):,} training images, batch {bs}, augment={augment}, "
            f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}. "
            f"Training epoch = the training phase of `learn.fit(1)` (no validation); loader pass = one pass over the training loader.\n\n"
            + to_markdown(df) + f"\n\nTraining epoch new / old = **{ratio['training epoch']:.3f}** (target <= 1.10); "
            f"loader pass new / old = {ratio['loader pass']:.3f}\n")
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tag = '' if fraction == 0.25 else f'_f{fraction:g}'
        Path(f'{out}{tag}.md').write_text(text)
        df.assign(fraction=fraction, threads=torch.get_num_threads(), command=cmd).to_csv(f'{out}{tag}.csv', index=False)
    return ratio


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--fraction', type=float, default=0.25)
    p.add_argument('--model', default='model_25k_wo_dw')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--augment', action='store_true')
    p.add_argument('--out', default='results/loaders')
    main(**vars(p.parse_args()))
