"""Fashion-MNIST: student alone vs KD vs a TAKD chain vs RCO (equal and greedy anchor schedules), mean ± std over seeds.

Protocol: a stratified `--fraction` of the training set for training; 5,000 further training images (never trained on)
as the validation set that selects every student's best epoch (SaveModelCallback on valid_loss) and every chain stage's
hand-off weights; 512 more as the greedy RCO probe; accuracy reported on the official 10,000-image test set. The teacher
(recorded with RouteRecorder) and the assistant are trained once (seed 0) and cached; every student gets the same epochs,
learning rate, batch order (per seed) and model selection.
Command: python bench/takd_rco.py --threads 1 --teacher-epochs 3 --n-valid 3000
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.metrics import accuracy
from kd_fastai.data.core import fashion_mnist_dls, TensorImageData, stratified_split, FMNIST_CLASSES
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.kd import KDCallback
from kd_fastai.experiments.runs import mean_std, to_markdown
from kd_fastai.multistep.takd import distill_chain, BestWeights, _seed_all, _validate
from kd_fastai.multistep.rco import RouteRecorder, Route, RCOCallback

def parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    a = p.add_argument
    a('--teacher', default='model_340k_wo_dw'); a('--assistant', default='model_143k_wo_dw'); a('--student', default='model_25k_wo_dw')
    a('--teacher-epochs', type=int, default=4); a('--epochs', type=int, default=3, help='epochs of every student (and the assistant)')
    a('--anchors', default='1,2', help='teacher epochs saved as RCO anchors (the final epoch is always added)')
    a('--seeds', type=int, default=3); a('--seed-list', default=None, help='run only these seeds, e.g. 1,2 (results are cached per run)')
    a('--fraction', type=float, default=0.25); a('--n-valid', type=int, default=5000); a('--n-probe', type=int, default=512)
    a('--bs', type=int, default=128); a('--lr', type=float, default=1e-2)
    a('--T', type=float, default=4.0); a('--alpha', type=float, default=0.9)
    a('--threshold', type=float, default=0.1, help="greedy RCO: the student jumps to the furthest anchor ahead whose KL(anchor || student) at T on the probe is at most this")
    a('--threads', type=int, default=None); a('--out', default='results'); a('--cache', default='.kd_cache')
    a('--no-table', action='store_true', help='only run (and cache) the runs, do not write the table')
    return p

def make_data(args):
    base = fashion_mnist_dls(bs=args.bs, fraction=args.fraction, seed=0)
    rest = base[2].dataset
    vi, pi = stratified_split(rest.y, args.n_valid / len(rest), seed=0)
    pi = pi[torch.randperm(len(pi), generator=torch.Generator().manual_seed(1))[:args.n_probe]]
    val = base.valid.new(TensorImageData(rest.x[vi], rest.y[vi], FMNIST_CLASSES))
    probe = base.valid.new(TensorImageData(rest.x[pi], rest.y[pi], FMNIST_CLASSES), bs=args.n_probe)
    dls = DataLoaders(base.train, val, path='.', device=base.device)
    return dls, base.valid, probe

def train_student(dls, test_dl, name, epochs, lr, seed, cbs=()):
    "Same protocol as every chain stage: seeded, one-cycle, best epoch on the validation loss, test accuracy"
    _seed_all(dls, seed)
    model = zoo_model(name, in_channels=1, num_classes=dls.c)
    learn = Learner(dls, model, metrics=accuracy, path=Path('.'), model_dir=Path(args_cache)/'tmp')
    best = BestWeights(fname=f'student_s{seed}')
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, cbs=list(cbs) + [best])
    sec = time.perf_counter() - t0
    return dict(valid_accuracy=_validate(learn), test_accuracy=_validate(learn, test_dl), seconds=sec,
                best_epoch=best.best_epoch, params=count_parameters(model)), model

args_cache = '.kd_cache'

def main(argv=None):
    global args_cache
    args = parser().parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    cache = Path(args.cache)/f'takd_rco_{args.teacher}_{args.assistant}_{args.student}_te{args.teacher_epochs}_e{args.epochs}_f{args.fraction:g}'
    cache.mkdir(parents=True, exist_ok=True)
    args_cache = str(cache)
    dls, test_dl, probe = make_data(args)
    log = lambda *a: print(*a, flush=True)
    # teacher, trained once with its route recorded
    route_dir = cache/'route'
    anchors = [int(a) for a in args.anchors.split(',') if a]
    if not (route_dir/'route.json').is_file() or Route.from_folder(route_dir).epochs[-1] != args.teacher_epochs:
        _seed_all(dls, 0)
        tl = Learner(dls, zoo_model(args.teacher, in_channels=1, num_classes=dls.c), metrics=accuracy)
        t0 = time.perf_counter()
        with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(args.teacher_epochs, args.lr, cbs=RouteRecorder(route_dir, every=None, epochs=anchors))
        (cache/'teacher_seconds.txt').write_text(f"{time.perf_counter() - t0:.1f}")
    route = Route.from_folder(route_dir)
    teacher = route.build(); teacher.load_state_dict(route.load(len(route) - 1))
    tl = Learner(dls, teacher, metrics=accuracy)
    teacher_row = dict(model=args.teacher, role='teacher (route: anchors at epochs ' + ', '.join(map(str, route.epochs)) + ')',
                       params=count_parameters(teacher), epochs=args.teacher_epochs, test_accuracy=_validate(tl, test_dl),
                       valid_accuracy=_validate(tl))
    log(f"teacher {args.teacher}: test {teacher_row['test_accuracy']*100:.2f}%, route {route}")
    # assistant, trained once (seed 0) as stage 1 of the chain teacher -> assistant
    af = cache/'assistant.pth'
    assistant = zoo_model(args.assistant, in_channels=1, num_classes=dls.c)
    if not af.is_file():
        models, df = distill_chain([teacher, args.assistant], dls, epochs=args.epochs, T=args.T, alpha=args.alpha, lr=args.lr,
                                   seed=0, test_dl=test_dl, log=log)
        torch.save(models[1].state_dict(), af)
    assistant.load_state_dict(torch.load(af))
    al = Learner(dls, assistant, metrics=accuracy)
    assistant_row = dict(model=args.assistant, role=f'assistant (KD from the teacher, seed 0, best of {args.epochs} epochs)',
                         params=count_parameters(assistant), epochs=args.epochs, test_accuracy=_validate(al, test_dl),
                         valid_accuracy=_validate(al))
    log(f"assistant {args.assistant}: test {assistant_row['test_accuracy']*100:.2f}%")
    kd = dict(T=args.T, alpha=args.alpha)
    methods = {
        'baseline (no teacher)': lambda: [],
        'KD from the teacher': lambda: [KDCallback(teacher, valid_metrics=False, **kd)],
        'TAKD chain (teacher -> assistant -> student)': None,
        'RCO, equal schedule': lambda: [RCOCallback(route, schedule='equal', valid_metrics=False, **kd)],
        f'RCO, greedy (KL <= {args.threshold:g})': lambda: [RCOCallback(route, schedule='greedy', threshold=args.threshold,
                                                                   probe=probe, n_probe=args.n_probe, valid_metrics=False, **kd)],
    }
    seeds = [int(s) for s in args.seed_list.split(',')] if args.seed_list else list(range(args.seeds))
    runs_dir = cache/'runs'; runs_dir.mkdir(exist_ok=True)
    for seed in seeds:
        for i, (method, make_cbs) in enumerate(methods.items()):
            f = runs_dir/f'm{i}_s{seed}.json'
            if f.is_file(): continue
            if make_cbs is None:  # the chain's last stage, from the cached assistant
                t0 = time.perf_counter()
                _, df = distill_chain([assistant, args.student], dls, epochs=args.epochs, T=args.T, alpha=args.alpha, lr=args.lr,
                                      seed=seed, test_dl=test_dl)
                r = df.iloc[-1]
                rec = dict(valid_accuracy=float(r.accuracy), test_accuracy=float(r.test_accuracy), seconds=float(r.seconds),
                           best_epoch=int(r.best_epoch), params=int(r.params))
            else:
                cbs = make_cbs()
                rec, _ = train_student(dls, test_dl, args.student, args.epochs, args.lr, seed, cbs)
                if cbs and isinstance(cbs[0], RCOCallback): rec['anchors'] = [h['anchor'] for h in cbs[0].history]
            rec.update(method=method, seed=seed)
            f.write_text(json.dumps(rec))
            log(f"seed {seed} {method}: test {rec['test_accuracy']*100:.2f}% ({rec['seconds']:.0f}s)" +
                (f" anchors {rec['anchors']}" if 'anchors' in rec else ''))
    if args.no_table: return None
    runs = [json.loads(f.read_text()) for f in sorted(runs_dir.glob('m*_s*.json'))]
    runs = [r for r in runs if r['seed'] < args.seeds]
    rows = []
    for method in methods:
        g = [r for r in runs if r['method'] == method]
        if not g: continue
        rows.append({'model': args.student, 'method': method, 'seeds': len(g), 'params': g[0]['params'],
                     'test accuracy (%)': mean_std([r['test_accuracy'] for r in g]),
                     'valid accuracy (%)': mean_std([r['valid_accuracy'] for r in g]),
                     'test_mean': np.mean([r['test_accuracy'] for r in g]) * 100,
                     'test_std': np.std([r['test_accuracy'] for r in g], ddof=1) * 100 if len(g) > 1 else 0.,
                     'sec/run': round(float(np.mean([r['seconds'] for r in g])), 1),
                     'RCO anchors per epoch (per seed)': ' / '.join(str(r['anchors']) for r in sorted(g, key=lambda r: r['seed'])) if 'anchors' in g[0] else ''})
    table = pd.DataFrame(rows)
    fixed = pd.DataFrame([dict(model=r['model'], method=r['role'], seeds=1, params=r['params'],
                               **{'test accuracy (%)': f"{r['test_accuracy']*100:.2f}", 'valid accuracy (%)': f"{r['valid_accuracy']*100:.2f}"})
                          for r in (teacher_row, assistant_row)])
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    cmd = 'python bench/takd_rco.py ' + ' '.join(argv if argv is not None else sys.argv[1:])
    cols = ['model', 'method', 'seeds', 'params', 'test accuracy (%)', 'valid accuracy (%)', 'sec/run', 'RCO anchors per epoch (per seed)']
    pd.concat([fixed, table], ignore_index=True).to_csv(out/'takd_rco.csv', index=False)
    md = ["# TAKD and RCO on Fashion-MNIST\n", f"Command: `{cmd}`\n",
          f"Settings: {args.fraction:g} of the training set (stratified, seed 0) for training; {args.n_valid} other training images "
          f"as validation set (best-epoch selection, chain hand-off); {args.n_probe} more as the greedy-RCO probe; accuracy on the "
          f"10,000 test images. Students: {args.epochs} epochs, one-cycle lr {args.lr:g}, batch {args.bs}, T={args.T:g}, alpha={args.alpha:g}, "
          f"best epoch by validation loss; {args.threads or 'default'} CPU thread(s). Teacher: {args.teacher_epochs} epochs, trained once. "
          f"Mean ± sample std over seeds {sorted({r['seed'] for r in runs})}.\n",
          to_markdown(fixed, ['model', 'method', 'seeds', 'params', 'test accuracy (%)', 'valid accuracy (%)']), '',
          to_markdown(table.fillna(''), cols), '']
    (out/'takd_rco.md').write_text('\n'.join(md))
    print('\n'.join(md))
    return table

if __name__ == '__main__': main()
