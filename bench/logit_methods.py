"""Logit-based KD methods on Fashion-MNIST: baseline, KD, KD+LS, DKD, DKD+LS, DIST, MLKD, SDD, CLKD per teacher -> student pair.

Each pair of the CIFAR-100 benchmark (zoo names, 1 input channel, 10 classes) is run at Fashion-MNIST scale on a
stratified `--fraction` of the training set. A stratified `--holdout` of those training images is held out: every
run keeps the weights of its best epoch on the held-out images, and that checkpoint is evaluated once on the
10,000 test images (the test set never picks anything). Teachers are trained once per pair (seed 0, same split,
same rule) and reused from `--teachers`. Every method uses the authors' defaults of its `kd_fastai` callback
(`kd_fastai.methods.METHODS`), with DKD's per-pair beta (`DKD_BETAS`) and LS's tau = 3 for vgg13 -> vgg8.

    python bench/logit_methods.py --pairs cifar_resnet56:cifar_resnet20 wrn_40_2:wrn_16_2 --seeds 3 --epochs 10 --fraction 0.25
    python bench/logit_methods.py --fraction 0.02 --epochs 1 --teacher-epochs 1 --seeds 1 --out /tmp/lm_smoke   # a smoke test
"""
import argparse, copy, shlex, sys, time
from pathlib import Path
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed, default_device
from kd_fastai.data import load_fashion_mnist, stratified_split, prepare_images, FMNIST_MEAN, FMNIST_STD
from kd_fastai.models import zoo_model, count_parameters
from kd_fastai.dkd import DKD_BETAS
from kd_fastai.experiments import mean_std, to_markdown
import kd_fastai.methods  # noqa: F401 (Learner.distill with method=)

METHODS = {'baseline': None, 'KD': 'kd', 'KD+LS': 'kd+ls', 'DKD': 'dkd', 'DKD+LS': 'dkd+ls', 'DIST': 'dist',
           'MLKD': 'mlkd', 'SDD': 'sdd', 'CLKD': 'clkd'}  # table name -> `distill(method=...)`


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pairs', nargs='+', default=['cifar_resnet56:cifar_resnet20', 'wrn_40_2:wrn_16_2'], help='teacher:student zoo names')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', type=int, default=3, help='seeds 0..n-1')
    p.add_argument('--epochs', type=int, default=10, help='epochs of every student run')
    p.add_argument('--teacher-epochs', type=int, default=None, help='epochs of the teachers (default: --epochs)')
    p.add_argument('--fraction', type=float, default=0.25, help='stratified fraction of the training set')
    p.add_argument('--holdout', type=float, default=0.1, help='stratified fraction of those images held out to pick the best epoch')
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--lr', type=float, default=1e-2, help='max learning rate of fit_one_cycle')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--teachers', default='kd_runs/teachers', help='folder of the trained teachers (reused)')
    p.add_argument('--out', default='results/logit_methods', help='writes OUT.md and OUT.csv; empty: no files')
    return p.parse_args(argv)


def make_data(fraction, holdout, bs):
    "Train / held-out loaders from a stratified fraction of the training set, and the test loader"
    xt, yt, xv, yv = load_fashion_mnist()
    keep, _ = stratified_split(yt, fraction, seed=42)
    held, train = stratified_split(yt[keep], holdout, seed=43)
    train, held = keep[train], keep[held]
    x, xtest = prepare_images(xt, FMNIST_MEAN, FMNIST_STD), prepare_images(xv, FMNIST_MEAN, FMNIST_STD)
    items = lambda xs, ys: list(zip(xs, ys))
    dls = DataLoaders(DataLoader(items(x[train], yt[train]), bs=bs, shuffle=True, drop_last=len(train) > bs),
                      DataLoader(items(x[held], yt[held]), bs=256), device=default_device())
    return dls, DataLoader(items(xtest, yv), bs=256, device=default_device()), (len(train), len(held))


class BestHeldOut(Callback):
    "Keep the weights of the epoch with the best held-out accuracy"
    order = 60  # after the Recorder has written the epoch's metrics
    best, state, best_epoch = -1., None, None
    def after_epoch(self):
        names = self.recorder.metric_names
        acc = self.recorder.values[-1][names.index('accuracy') - 1]
        if acc > self.best: self.best, self.best_epoch, self.state = acc, self.epoch, copy.deepcopy(self.learn.model.state_dict())


def train(dls, test_dl, name, epochs, lr, seed, teacher=None, method=None, **method_kwargs):
    "One run: returns (model, record) with the test accuracy of its best held-out epoch"
    set_seed(seed, reproducible=True)
    learn = Learner(dls, zoo_model(name, in_channels=1, num_classes=10), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    best = BestHeldOut()
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        if method is None: learn.fit_one_cycle(epochs, lr, cbs=best)
        else: learn.distill(teacher, epochs, lr, method=method, metrics=False, cbs=best, **method_kwargs)
    sec = (time.perf_counter() - t0) / epochs
    learn.model.load_state_dict(best.state)
    with learn.no_bar(): test_acc = float(learn.validate(dl=test_dl)[1])
    return learn.model, dict(best_epoch=best.best_epoch + 1, heldout_acc=best.best, test_acc=test_acc, sec_per_epoch=sec,
                             params=count_parameters(learn.model))


def get_teacher(args, dls, test_dl, name, log):
    "A teacher trained once (seed 0) and saved, or loaded"
    e = args.teacher_epochs or args.epochs
    f = Path(args.teachers)/f'{name}_f{args.fraction}_h{args.holdout}_e{e}.pth'
    if f.exists():
        model = zoo_model(name, in_channels=1, num_classes=10)
        ck = torch.load(f, map_location='cpu', weights_only=False)
        model.load_state_dict(ck['state']); log(f"teacher {name}: loaded {f}")
        return model, ck['record']
    model, rec = train(dls, test_dl, name, e, args.lr, 0)
    f.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state=model.state_dict(), record=rec), f)
    log(f"teacher {name}: {rec['test_acc']*100:.2f}% test ({e} epochs), saved to {f}")
    return model, rec


def pair_kwargs(method, teacher, student):
    "Per-pair hyper-parameters of the authors: DKD's beta, LS's tau = 3 for vgg13 -> vgg8"
    kw = {}
    if method in ('dkd', 'dkd+ls') and (teacher, student) in DKD_BETAS: kw['beta'] = DKD_BETAS[teacher, student]
    if method.endswith('+ls') and (teacher, student) == ('vgg13', 'vgg8') and method != 'mlkd+ls': kw['T'] = 3.
    return kw


def run(args, log=lambda s: print(s, flush=True)):
    torch.set_num_threads(args.threads)
    dls, test_dl, sizes = make_data(args.fraction, args.holdout, args.bs)
    log(f"{sizes[0]} training images, {sizes[1]} held out, {len(test_dl.dataset)} test")
    rows = []
    for pair in args.pairs:
        tname, sname = pair.split(':')
        teacher, trec = get_teacher(args, dls, test_dl, tname, log)
        rows.append(dict(pair=pair, model=tname, method='teacher', seed=0, **trec))
        for seed in range(args.seeds):
            for label in args.methods:
                m = METHODS[label]
                kw = {} if m is None else pair_kwargs(m, tname, sname)
                _, rec = train(dls, test_dl, sname, args.epochs, args.lr, seed, teacher.train(), m, **kw)
                rows.append(dict(pair=pair, model=sname, method=label, seed=seed, **rec))
                log(f"{pair} seed {seed} {label:8s} test {rec['test_acc']*100:.2f}% (held-out {rec['heldout_acc']*100:.2f}%, "
                    f"best epoch {rec['best_epoch']}, {rec['sec_per_epoch']:.1f} s/epoch)")
    return pd.DataFrame(rows)


def summarize(df):
    "Mean ± std of the test accuracy per pair and method"
    out = []
    for (pair, method), g in df.groupby(['pair', 'method'], sort=False):
        out.append({'pair': pair, 'method': method, 'seeds': len(g), 'test accuracy (%)': mean_std(list(g.test_acc)),
                    'held-out accuracy (%)': mean_std(list(g.heldout_acc)), 'best epoch': f"{g.best_epoch.mean():.1f}",
                    'sec/epoch': f"{g.sec_per_epoch.mean():.2f}"})
    return pd.DataFrame(out)


def main(argv=None):
    args = parse_args(argv)
    df = run(args)
    table = summarize(df)
    cmd = 'python bench/logit_methods.py ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(table.to_string(index=False))
    if args.out:
        out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out.with_suffix('.csv'), index=False)
        md = (f"# Logit-based KD methods on Fashion-MNIST\n\nCommand: `{cmd}`\n\n"
              f"{args.epochs} epochs (one-cycle, max lr {args.lr}, batch {args.bs}), {args.fraction} of the training set, "
              f"{args.holdout} of it held out to pick each run's best epoch; accuracy on the 10,000 test images at that "
              "epoch, mean ± std over seeds 0..n-1. Teachers: seed 0, same split and rule.\n\n"
              + to_markdown(table) + "\n\nPer-seed rows: " + out.with_suffix('.csv').name + "\n")
        out.with_suffix('.md').write_text(md)
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == '__main__': main()
