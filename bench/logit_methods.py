"""Logit-based KD methods on Fashion-MNIST: baseline, KD, KD+LS, DKD, DKD+LS, DIST, MLKD, SDD, CLKD per teacher -> student pair.

Each pair of the CIFAR-100 benchmark (zoo names, 1 input channel, 10 classes) is run at Fashion-MNIST scale on a
stratified `--fraction` of the training set, through kd_fastai's fastai loaders (`tensor_image_dls`, random crop +
flip unless `--no-augment`). A stratified `--holdout` of those training images is the validation set: every
run keeps the weights of its best epoch on the held-out images (`BestWeights`), and that checkpoint is evaluated once
on the 10,000 test images (the test set never picks anything). KD, KD+LS, DKD, DKD+LS, DIST, CLKD and SDD read the teacher's
logits (SDD: its regional logits) from the teacher-output cache (`--views` pre-drawn augmented views per item, filled
once per teacher and reused by every seed); MLKD runs its teacher at every step (random strong views: no cache). Tables
name, from each row's `cached` column, which runs used the cache (SDD ran live before the cache held regional logits). Teachers are trained once per pair (seed 0, same split,
same rule) and reused from `--teachers`. Every method uses the authors' defaults of its `kd_fastai` callback
(`kd_fastai.core.registry.METHODS`), with DKD's per-pair beta (`DKD_BETAS`) and LS's tau = 3 for vgg13 -> vgg8.

    python bench/logit_methods.py --pairs vgg13:vgg8 cifar_resnet56:cifar_resnet20 --seeds 3 --epochs 8 --fraction 0.06 --teacher-fraction 0.15 --teacher-epochs 6 --threads 2
    python bench/logit_methods.py --fraction 0.02 --epochs 1 --teacher-epochs 1 --seeds 1 --out /tmp/lm_smoke   # a smoke test

`--shipped-teachers` takes the pairs' teachers from the package (`kd_fastai.models.pretrained`, trained on all the data), so
runs made on different machines share one teacher; `--resume` then continues an interrupted table from its CSV:

    python bench/logit_methods.py --pairs cifar_resnet56:cifar_resnet20 --shipped-teachers --epochs 20 --fraction 0.06 --resume --out results/logit_methods_patient

`--methods` also takes the feature methods (`bench/feature_methods.py` runs those by default) and whole training
recipes (`RECIPES`: TAKD with `--assistant`, RCO equal and greedy from a shipped teacher's route, CS-KD, Tf-KD self and
virtual teacher; `bench/patient.py` runs those on all the data).
"""
import argparse, ctypes, json, os, random, shlex, sys, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from kd_fastai.data.core import load_fashion_mnist, stratified_split, TensorImageData, tensor_image_dls, FMNIST_MEAN, FMNIST_STD, FMNIST_CLASSES
from kd_fastai.multistep.takd import BestWeights
from kd_fastai.multistep.rco import RCOCallback
from kd_fastai.core.registry import UNCACHED, METHODS as LIBRARY_METHODS, is_feature_method
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.experiments.runs import mean_std, to_markdown, write_csv
import kd_fastai.core.registry  # noqa: F401 (Learner.distill with method=)

class ReleaseFreeMemory(Callback):
    "Hands the heap's free pages back to the system every `every` training batches (glibc's `malloc_trim`)"
    # A one-thread torchvision resnet18 run on all the data grew from 1.2 GB to over 20 GB in an hour and was killed for
    # memory (session 18): glibc had stopped returning freed buffers to the system. A fixed mmap threshold kept it flat
    # but made each batch 1.7x slower; trimming every 50 batches costs nothing measurable.
    def __init__(self, every:int=50): self.every, self.trim = every, getattr(_libc(), 'malloc_trim', None)
    def after_batch(self):
        if self.trim is not None and self.training and self.iter % self.every == 0: self.trim(0)

def _libc():
    try: return ctypes.CDLL('libc.so.6')
    except OSError: return None  # not glibc: nothing to trim


LOGIT_METHODS = {'baseline': None, 'KD': 'kd', 'KD+LS': 'kd+ls', 'DKD': 'dkd', 'DKD+LS': 'dkd+ls', 'DIST': 'dist',
                 'MLKD': 'mlkd', 'SDD': 'sdd', 'CLKD': 'clkd'}  # table name -> `distill(method=...)`
FEATURE_METHODS = {'FitNet': 'fitnet', 'AT': 'at', 'RKD': 'rkd', 'CRD': 'crd', 'CRD+KD': 'crd+kd', 'OFD': 'ofd',
                   'OFD+KD': 'ofd+kd', 'ReviewKD': 'reviewkd'}  # bench/feature_methods.py's rows (no cache: they need feature maps)
RECIPES = ('TAKD', 'RCO', 'RCO greedy', 'CS-KD', 'Tf-KD self', 'Tf-KD virtual')  # whole training recipes (`recipe_callbacks`)
TEACHER_FREE = ('CS-KD', 'Tf-KD virtual')  # recipes that use no teacher network (Tf-KD self's teacher is the student trained alone)
METHODS = {**LOGIT_METHODS, **FEATURE_METHODS, **{r: r for r in RECIPES}}
FEATURE_KEYS = {k for k, v in LIBRARY_METHODS.items() if is_feature_method(v[0])}  # no cache: they need the teacher's feature maps


def parse_args(argv=None, defaults=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pairs', nargs='+', default=['cifar_resnet56:cifar_resnet20', 'wrn_40_2:wrn_16_2'], help='teacher:student zoo names')
    p.add_argument('--methods', nargs='+', default=list(LOGIT_METHODS), choices=list(METHODS))
    p.add_argument('--seeds', type=int, default=3, help='seeds 0..n-1')
    p.add_argument('--seed-list', type=int, nargs='+', default=None,
                   help='run only these of the seeds 0..n-1 (split a table over processes; join them with --from-csv); '
                        'with --from-csv: the table of these seeds only')
    p.add_argument('--epochs', type=int, default=10, help='epochs of every student run')
    p.add_argument('--teacher-epochs', type=int, default=None, help='epochs of the teachers (default: --epochs)')
    p.add_argument('--fraction', type=float, default=0.25, help='stratified fraction of the training set')
    p.add_argument('--teacher-fraction', type=float, default=None,
                   help='stratified fraction of the training set the teachers train on (contains the students\' images, '
                        'not their held-out ones); default: the students\' --fraction')
    p.add_argument('--holdout', type=float, default=0.1, help='stratified fraction of those images held out to pick the best epoch')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--no-augment', dest='augment', action='store_false', help='no random crop + flip')
    p.add_argument('--views', type=int, default=8, help='augmented views per item in the teacher-output cache')
    p.add_argument('--no-cache', dest='cache', action='store_false', help='run the teacher at every step for every method')
    p.add_argument('--lr', type=float, default=1e-2, help='max learning rate of fit_one_cycle')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--teachers', default='kd_runs/teachers', help='folder of the trained teachers (reused) and their caches')
    p.add_argument('--shipped-teachers', action='store_true',
                   help="the pairs' teachers are kd_fastai's shipped teachers (`pretrained_teacher(NAME)`, trained on all "
                        "60,000 images, held-out ones included): nothing is trained, and runs on other machines use the same teacher")
    p.add_argument('--shipped-folder', default=None, help="folder of the shipped teachers' weights and index (default: the package's)")
    p.add_argument('--resume', action='store_true',
                   help='keep the rows of OUT.csv written by the same command (without --resume) and run only the missing ones')
    p.add_argument('--out', default='results/logit_methods', help='writes OUT.md and OUT.csv (the CSV after every run); empty: no files')
    p.add_argument('--assistant', default=None, help='zoo name of the TAKD assistant (distilled once from the teacher, seed 0, same protocol)')
    p.add_argument('--method-args', type=json.loads, default=None, help='JSON arguments for every distillation method, e.g. \'{"alpha": 0.5}\'')
    p.add_argument('--label-suffix', default='', help='appended to the method names in the table, e.g. " (alpha=0.5)"')
    p.add_argument('--from-csv', nargs='+', default=None, metavar='CSV',
                   help='train nothing: write the table of the per-seed rows of these CSVs (runs split over processes)')
    p.add_argument('--title', default='Logit-based KD methods on Fashion-MNIST', help='heading of OUT.md')
    p.add_argument('--note', default='', help='a paragraph of OUT.md after the protocol (e.g. the machine the runs shared)')
    if defaults: p.set_defaults(**defaults)
    return p.parse_args(argv)


def make_data(fraction, holdout, bs, augment, teacher_fraction=None):
    """fastai loaders: train, held-out (the validation set) from a stratified fraction of the training set, and test;
    and the teachers' loaders: a larger stratified `teacher_fraction` of the training set (it contains the students'
    training images, never their held-out ones), with the same held-out and test sets"""
    xt, yt, xv, yv = load_fashion_mnist()
    keep, _ = stratified_split(yt, fraction, seed=42)
    held, train = stratified_split(yt[keep], holdout, seed=43)
    train, held = keep[train], keep[held]
    data = lambda i: TensorImageData(xt[i], yt[i], FMNIST_CLASSES)
    test = TensorImageData(xv, yv, FMNIST_CLASSES)
    loaders = lambda i: tensor_image_dls(data(i), data(held), test, bs=bs, val_bs=512, augment=augment, mean=FMNIST_MEAN,
                                         std=FMNIST_STD, path=Path(tempfile.mkdtemp(prefix='kd_bench_')))
    dls, tdls = loaders(train), None
    if teacher_fraction is not None and teacher_fraction > fraction:
        more, _ = stratified_split(yt, teacher_fraction, seed=44)
        more = torch.tensor(sorted(set(more.tolist()) - set(held.tolist()) | set(train.tolist())))
        tdls = loaders(more)
    return dls, tdls or dls, (len(train), len(held), len(yv), len(tdls.train_ds) if tdls else len(train))


class EpochCheckpoint(Callback):
    "Saves after each training epoch what a killed run needs to go on from the next one: weights, optimizer, RNGs, best epoch"
    order = BestWeights.order + 1  # after `best` has saved a new best epoch
    def __init__(self, fname, # the checkpoint file: read if it exists (the run goes on from it), rewritten every epoch
                 best:BestWeights, # the run's best-epoch keeper, whose state (and best weights) the checkpoint carries
                 key:dict): # what the run is (model, seed, protocol): a checkpoint of another run is refused
        self.fname, self.best, self.key, self.state = Path(fname), best, key, None
        if self.fname.exists():
            self.state = torch.load(self.fname, map_location='cpu', weights_only=False)
            if self.state['key'] != key:
                raise ValueError(f"{self.fname} is the checkpoint of another run ({self.state['key']}, not {key}): remove it.")
        self.start = self.state['epoch'] if self.state else 0  # the first epoch to train (`fit(start_epoch=...)`)
        self.elapsed = self.state['elapsed'] if self.state else 0.  # seconds of training so far, earlier processes included

    def best_file(self): return self.learn.path/self.learn.model_dir/f'{self.best.fname}.pth'
    def before_fit(self): self.t0, self.before = time.perf_counter(), self.elapsed
    def restore_best(self, s):
        "The best epoch so far and its weights (in `best`'s file) as the checkpoint `s` has them"
        self.best.best, self.best.best_epoch = s['best'], s['best_epoch']
        if s['best_weights'] is not None:
            self.best_file().parent.mkdir(parents=True, exist_ok=True); self.best_file().write_bytes(s['best_weights'])

    def finished(self, learn)->bool:
        "True if the checkpoint's run trained all its epochs (killed before its row was written): `learn` gets its best weights"
        if self.state is None or self.state['epoch'] < self.key['epochs']: return False
        self.learn = learn; self.restore_best(self.state)
        learn.load(self.best.fname, with_opt=False, weights_only=False)
        return True

    def before_train(self):
        s, self.state = self.state, None
        if s is None: return
        self.learn.model.load_state_dict(s['model']); self.learn.opt.load_state_dict(s['opt'])
        self.restore_best(s)
        random.setstate(s['rng']['python']); np.random.set_state(s['rng']['numpy']); torch.set_rng_state(s['rng']['torch'])
        self.dls.train.rng.setstate(s['rng']['loader'])

    def after_epoch(self):
        if self.epoch < self.start: return  # an epoch skipped by the resumed fit
        self.elapsed = self.before + time.perf_counter() - self.t0
        f = self.best_file()
        rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(), loader=self.dls.train.rng.getstate())
        state = dict(key=self.key, epoch=self.epoch + 1, elapsed=self.elapsed, model=self.learn.model.state_dict(),
                     opt=self.learn.opt.state_dict(), best=self.best.best, best_epoch=self.best.best_epoch,
                     best_weights=f.read_bytes() if f.exists() else None, rng=rng)
        self.fname.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.fname.with_suffix('.tmp')); os.replace(self.fname.with_suffix('.tmp'), self.fname)  # whole or not at all


def train(dls, name, epochs, lr, seed, teacher=None, method=None, cbs=(), checkpoint=None, **method_kwargs):
    """One run: returns (model, record) with the test accuracy (`dls[2]`) of its best held-out epoch; `method`: a
    `distill(method=...)` name, or None for `fit_one_cycle` with the callbacks `cbs` (the student alone, or a recipe);
    `checkpoint`: a file (student alone only) saved after every epoch, from which a killed run goes on when called again"""
    set_seed(seed, reproducible=True)
    for dl in dls.loaders: dl.rng = random.Random(seed)  # the batch order too (a loader's rng was drawn when it was built)
    learn = Learner(dls, zoo_model(name, in_channels=1, num_classes=10), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    best = BestWeights(monitor='accuracy', fname=f'best_{name}')
    if checkpoint is not None and (method is not None or cbs):
        raise ValueError("A checkpoint resumes the student alone only: a method's or a recipe's own state is not saved in it.")
    ckpt = EpochCheckpoint(checkpoint, best, dict(model=name, seed=seed, epochs=epochs, lr=lr, bs=dls.train.bs, n_train=len(dls.train_ds))) if checkpoint else None
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        if ckpt and ckpt.finished(learn): pass
        elif ckpt: learn.fit_one_cycle(epochs, lr, cbs=[best, ckpt, ReleaseFreeMemory()], start_epoch=ckpt.start)
        elif method is None: learn.fit_one_cycle(epochs, lr, cbs=[*cbs, best, ReleaseFreeMemory()])
        else: learn.distill(teacher, epochs, lr, method=method, metrics=False, cbs=[best, ReleaseFreeMemory()], **method_kwargs)
    sec = (ckpt.elapsed if ckpt else time.perf_counter() - t0) / epochs
    with learn.no_bar(), learn.no_logging(): test_acc = float(learn.validate(dl=dls[2])[1])
    rec = dict(best_epoch=best.best_epoch + 1, heldout_acc=float(best.best), test_acc=test_acc, sec_per_epoch=sec,
               params=count_parameters(learn.model))
    rco = [c for c in cbs if isinstance(c, RCOCallback)]
    if rco: rec['anchors'] = ' '.join(str(h['anchor']) for h in rco[0].history)  # anchor per epoch
    return learn.model, rec


def saved_model(f, name, make, log):
    "The zoo model `name` with the weights saved in `f`, or `make()` -> (model, record) trained now and saved there"
    if f.exists():
        ck = torch.load(f, map_location='cpu', weights_only=False)
        model = zoo_model(name, in_channels=1, num_classes=10); model.load_state_dict(ck['state'])
        return model, ck['record']
    model, rec = make()
    f.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state=model.state_dict(), record=rec), f)
    log(f"{name}: {rec['test_acc']*100:.2f}% test, saved to {f}")
    return model, rec


def recipe_callbacks(label, args, dls, tname, sname, teacher, tfile, seed, log):
    """(training loaders, callbacks, a row for the table or None) of the recipe `label`, each with the library's
    defaults (KD's T = 4, alpha = 0.9): TAKD: KD from the assistant (`--assistant`, distilled once from the teacher); RCO: the shipped teacher's route,
    equal epochs per anchor or the paper's greedy search (probe: the held-out images); CS-KD: class-wise pairs; Tf-KD
    self: KD (T = 4, alpha = 0.1) from the student trained alone with the same seed (saved by its baseline run); Tf-KD
    virtual: `VirtualTeacherCallback` (the authors' T = 20, alpha = 0.1, a = 0.99)"""
    from kd_fastai.core.kd import KDCallback
    from kd_fastai.multistep.selfkd import CSKDCallback, VirtualTeacherCallback
    if label == 'TAKD':
        if not args.assistant: raise ValueError("TAKD needs an assistant: pass --assistant ZOO_NAME (e.g. model_143k_wo_dw).")
        assistant, arec = saved_model(Path(args.teachers)/f'assistant_{args.assistant}_from_{tfile.stem}_{protocol_tag(args)}.pth', args.assistant,
                                   lambda: train(dls, args.assistant, args.epochs, args.lr, 0, cbs=[KDCallback(teacher, valid_metrics=False)]), log)
        return dls, [KDCallback(assistant, valid_metrics=False)], dict(model=args.assistant, method='assistant', seed=0, **arec)
    if label in ('RCO', 'RCO greedy'):
        if not args.shipped_teachers: raise ValueError("RCO needs the teacher's training route: run with --shipped-teachers "
                                                       "and a teacher shipped with its route (bench/train_teachers.py --route-every).")
        from kd_fastai.multistep.rco import pretrained_route
        route = pretrained_route(tname, args.shipped_folder)
        return dls, [RCOCallback(route, schedule='greedy' if label == 'RCO greedy' else 'equal', valid_metrics=False)], None
    if label == 'CS-KD': return dls.with_class_pairs(), [CSKDCallback()], None
    if label == 'Tf-KD self':
        base, _ = saved_model(baseline_file(args, sname, seed), sname, lambda: train(dls, sname, args.epochs, args.lr, seed), log)
        return dls, [KDCallback(base, T=4., alpha=0.1, valid_metrics=False)], None
    if label == 'Tf-KD virtual': return dls, [VirtualTeacherCallback()], None
    raise ValueError(f"Unknown recipe {label!r}: one of {RECIPES}.")


def protocol_tag(args)->str:
    "The students' protocol in a file name: data fraction, held-out fraction, epochs, augmentation"
    return f"f{args.fraction}_h{args.holdout}_e{args.epochs}{'_aug' if args.augment else ''}"


def baseline_file(args, sname, seed):
    "Where the baseline run of `seed` keeps its student (the Tf-KD self row's teacher)"
    return Path(args.teachers)/f"baseline_{sname}_{protocol_tag(args)}_s{seed}.pth"


def shipped_teacher(dls, name, log, folder=None):
    "kd_fastai's shipped teacher `name`, its test accuracy measured here (it must match the index)"
    from kd_fastai.models.pretrained import pretrained_teacher
    model = pretrained_teacher(name, folder)
    info = model.pretrained_info
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): acc = float(learn.validate(dl=dls[2])[1])
    if abs(acc - info['test_acc']) > 2e-3:
        raise RuntimeError(f"The shipped teacher {name!r} scores {acc:.4f} on the test set here, its index says {info['test_acc']}.")
    log(f"teacher {name}: shipped, {acc*100:.2f}% test ({info['epochs']} epochs on {info['train_images']} images, sha256 {info['sha256'][:12]})")
    rec = dict(best_epoch=info['epochs'], heldout_acc=float('nan'), test_acc=acc, sec_per_epoch=float('nan'), params=info['params'])
    return model.eval(), rec, Path(f"shipped_{name}_{info['sha256'][:12]}")


def get_teacher(args, dls, name, log):
    "A teacher trained once (seed 0) and saved, or loaded; or the shipped one (`--shipped-teachers`)"
    if args.shipped_teachers: return shipped_teacher(dls, name, log, args.shipped_folder)
    e = args.teacher_epochs or args.epochs
    tf = args.teacher_fraction if args.teacher_fraction and args.teacher_fraction > args.fraction else args.fraction
    f = Path(args.teachers)/f'{name}_f{args.fraction}_t{tf}_h{args.holdout}_e{e}{"_aug" if args.augment else ""}.pth'
    if f.exists():
        model = zoo_model(name, in_channels=1, num_classes=10)
        ck = torch.load(f, map_location='cpu', weights_only=False)
        model.load_state_dict(ck['state']); log(f"teacher {name}: loaded {f}")
        return model, ck['record'], f
    model, rec = train(dls, name, e, args.lr, 0)
    f.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state=model.state_dict(), record=rec), f)
    log(f"teacher {name}: {rec['test_acc']*100:.2f}% test ({e} epochs), saved to {f}")
    return model, rec, f


def pair_kwargs(method, teacher, student):
    "Per-pair settings the library does not look up itself: KD+LS's tau = 3 for vgg13 -> vgg8 (DKD's beta and DKD+LS's\n    (T, weight, beta) come from the callbacks' own per-pair tables)"
    kw = {}
    if method == 'kd+ls' and (teacher, student) == ('vgg13', 'vgg8'): kw['T'] = 3.
    return kw


def cache_kwargs(args, method, teacher_file):
    "The teacher-output cache of `method`, one folder per teacher file shared by every seed and logit method (SDD's regional logits and MLKD's strong views: their own)"
    if not args.cache or method is None or method.removesuffix('+ls') in UNCACHED or method.split('+')[0] in FEATURE_KEYS: return {}
    own = {'sdd': '_sdd', 'mlkd': '_mlkd', 'mlkd+ls': '_mlkd'}.get(method, '')  # what they cache is their own
    return dict(cache_path=Path(args.teachers)/f'cache_{teacher_file.stem}_v{args.views}{own}',
                cache_kwargs=dict(views=args.views, verbose=False) if args.augment else dict(verbose=False))


def run(args, log=lambda s: print(s, flush=True), save=lambda rows: None, done=()):
    "Every (pair, seed, method) run but those in `done` (the rows of an interrupted run of the same command, kept first)"
    torch.set_num_threads(args.threads)
    dls, tdls, sizes = make_data(args.fraction, args.holdout, args.bs, args.augment, args.teacher_fraction)
    log(f"{sizes[0]} training images, {sizes[1]} held out, {sizes[2]} test; "
        + ("shipped teachers" if args.shipped_teachers else f"teachers train on {sizes[3]} images"))
    rows = [dict(r) for r in done]
    have = {(r['pair'], r['method'], r['seed']) for r in rows}
    if have: log(f"resuming: {len(have)} rows kept")
    for pair in args.pairs:
        tname, sname = pair.split(':')
        seeds = [s for s in range(args.seeds) if args.seed_list is None or s in args.seed_list]
        todo = [(seed, label) for seed in seeds for label in args.methods
                if (pair, label + (args.label_suffix if METHODS[label] else ''), seed) not in have]
        if not todo: continue
        teacher, trec, tfile = get_teacher(args, tdls, tname, log)
        if (pair, 'teacher', 0) not in have: rows.append(dict(pair=pair, model=tname, method='teacher', seed=0, **trec))
        for seed, label in todo:
            m = METHODS[label]
            if label in RECIPES:
                rdls, cbs, extra = recipe_callbacks(label, args, dls, tname, sname, teacher, tfile, seed, log)
                if extra and (pair, extra['method'], 0) not in {(r['pair'], r['method'], r['seed']) for r in rows}:
                    rows.append(dict(pair=pair, **extra))
                _, rec = train(rdls, sname, args.epochs, args.lr, seed, cbs=cbs)
                m, kw = None, {}
            else:
                kw = {} if m is None else {**pair_kwargs(m, tname, sname), **cache_kwargs(args, m, tfile), **(args.method_args or {})}
                model, rec = train(dls, sname, args.epochs, args.lr, seed, teacher, m, **kw)
                if m is None and 'Tf-KD self' in args.methods:  # its teacher: the student trained alone with this seed
                    f = baseline_file(args, sname, seed); f.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(dict(state=model.state_dict(), record=rec), f)
            rows.append(dict(pair=pair, model=sname, method=label + (args.label_suffix if METHODS[label] else ''), seed=seed,
                             cached=bool(kw.get('cache_path')), **rec))
            save(rows)
            log(f"{pair} seed {seed} {label:8s} test {rec['test_acc']*100:.2f}% (held-out {rec['heldout_acc']*100:.2f}%, "
                f"best epoch {rec['best_epoch']}, {rec['sec_per_epoch']:.1f} s/epoch)")
    return pd.DataFrame(rows)


def join_runs(frames):
    "The per-seed rows of runs split over processes: each (pair, method, seed) once (a pair's teacher is in every run), teacher first"
    df = pd.concat(frames, ignore_index=True).drop_duplicates(['pair', 'method', 'seed'])
    rank = {m: i for i, m in enumerate(['teacher', 'assistant', *METHODS])}
    pairs = {p: i for i, p in enumerate(dict.fromkeys(df.pair))}
    key = df.apply(lambda r: (pairs[r.pair], rank.get(r.method, rank.get(r.method.split(' ')[0], len(rank))), r.method, r.seed), axis=1)
    return df.iloc[sorted(range(len(df)), key=lambda i: key.iloc[i])].reset_index(drop=True)


SELECTION = {'methods', 'seeds', 'seed_list', 'resume', 'threads', 'out', 'title', 'note'}  # arguments that pick runs, not how a run goes


def resumable_rows(csv, args, defaults=None)->list:
    "The rows of `csv` if its command ran the same protocol as `args` (methods, seeds, threads may differ)"
    if not csv.exists(): return []
    df = pd.read_csv(csv)
    protocol = lambda a: {k: v for k, v in vars(a).items() if k not in SELECTION}
    for c in df['command'].dropna().unique():
        old = parse_args(shlex.split(c)[2:], defaults)
        diff = {k: (v, protocol(args)[k]) for k, v in protocol(old).items() if protocol(args)[k] != v}
        if diff: raise ValueError(f"{csv} holds runs of another protocol ({', '.join(f'{k}: {o!r} there, {n!r} here' for k, (o, n) in diff.items())}); "
                                  "--resume continues only runs of the same protocol (--methods, --seeds, --threads may change). "
                                  "Use another --out, or remove the file.")
    return df.to_dict('records')


def paired(g, ref)->str:
    "Mean ± std (points) of the per-seed test-accuracy differences between the runs `g` and `ref`, paired by seed"
    if ref is None: return ''
    d = g.set_index('seed').test_acc.sub(ref.set_index('seed').test_acc).dropna()
    return mean_std(list(d)) if len(d) else ''


def known(col, fmt):
    "`fmt` of a column's known values, '–' where it has none (a shipped teacher has no held-out accuracy or epoch time)"
    col = col.dropna()
    return fmt(col) if len(col) else '–'


def summarize(df):
    "Mean ± std of the test accuracy per pair and method, and its gain over the baseline and over KD, paired by seed"
    out = []
    for (pair, method), g in df.groupby(['pair', 'method'], sort=False):
        ref = lambda m: None if method in ('teacher', 'assistant', m) or not ((df.pair == pair) & (df.method == m)).any() \
                        else df[(df.pair == pair) & (df.method == m)]
        out.append({'pair': pair, 'method': method, 'seeds': len(g), 'test accuracy (%)': mean_std(list(g.test_acc)),
                    'gain over baseline (points)': paired(g, ref('baseline')), 'gain over KD (points)': paired(g, ref('KD')),
                    'held-out accuracy (%)': known(g.heldout_acc, lambda v: mean_std(list(v))),
                    'best epoch': known(g.best_epoch, lambda v: f"{v.mean():.1f}"),
                    'sec/epoch': known(g.sec_per_epoch, lambda v: f"{v.mean():.2f}")})
    return pd.DataFrame(out)


def teachers_text(df, args, defaults=None)->str:
    "Where each pair's teacher came from, read from the command of its teacher row (tables joined by --from-csv may mix)"
    def one(a):
        if a.shipped_teachers:
            return ("kd_fastai's shipped teacher (`pretrained_teacher`, trained on all 60,000 training images, the students' "
                    "held-out images included; its row gives the index's epochs)")
        return (f"trained here, seed 0, same held-out rule, {a.teacher_epochs or a.epochs} epochs on {a.teacher_fraction or a.fraction} "
                "of the training set (the students' images included, their held-out images excluded)")
    teachers = df[df.method == 'teacher'] if 'command' in df else df.iloc[:0]
    found = {r.pair: one(parse_args(shlex.split(r.command)[2:], defaults)) for r in teachers.itertuples()
             if isinstance(r.command, str)}
    texts = set(found.values()) or {one(args)}
    if len(texts) == 1: return f"Teachers: {texts.pop()}. "
    return "Teachers: " + "; ".join(f"{pair}: {t}" for pair, t in found.items()) + ". "


def cache_text(df, views)->str:
    "Which methods read the teacher-output cache and which ran their teacher at every step, from the rows' `cached` column"
    if 'cached' not in df: return ''
    runs = df[~df.method.isin(['teacher', 'assistant', 'baseline'])]
    free = runs.method.isin(TEACHER_FREE)
    say = lambda m: ', '.join(dict.fromkeys(runs.method[m]))
    cached = runs.cached.fillna(False).astype(bool)
    live = ~cached & ~free
    return ((f"Teacher-output cache ({views} views per item): {say(cached)}. " if cached.any() else "No cache. ")
            + (f"Teacher run at every step: {say(live)}. " if live.any() else "")
            + (f"No teacher: {say(free)}." if free.any() else "")).rstrip()


TEXT_FIELDS = ('epochs', 'lr', 'bs', 'augment', 'fraction', 'holdout', 'views')  # the protocol that OUT.md states


def text_protocol(df, args, defaults=None):
    "The arguments whose protocol OUT.md states: those of the rows' commands (joined tables: they must agree), else `args`"
    cmds = df['command'].dropna().unique() if 'command' in df else []
    if not len(cmds): return args
    parsed = [parse_args(shlex.split(c)[2:], defaults) for c in cmds]
    differ = [k for k in TEXT_FIELDS if len({getattr(a, k) for a in parsed}) > 1]
    if differ: raise ValueError(f"The runs joined differ in {', '.join(differ)}: join only runs of one protocol.")
    return parsed[0]


def main(argv=None, defaults=None, script='bench/logit_methods.py'):
    args = parse_args(argv, defaults)
    out = Path(args.out) if args.out else None
    if out: out.parent.mkdir(parents=True, exist_ok=True)
    save = (lambda rows: write_csv(pd.DataFrame(rows), out.with_suffix('.csv'))) if out else (lambda rows: None)
    if args.from_csv:
        df = join_runs([pd.read_csv(f) for f in args.from_csv])
        if args.seed_list is not None: df = df[df.seed.isin(args.seed_list) | df.method.isin(['teacher', 'assistant'])]  # a table of these seeds only
        if parse_args(argv, {**(defaults or {}), 'methods': None}).methods is not None:  # --methods given (any spelling): a table of these methods only (labels' suffixes ignored)
            df = df[df.method.str.split(' (', regex=False).str[0].isin(args.methods) | df.method.isin(['teacher', 'assistant'])]
    cmd = f'python {script} ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if not args.from_csv:
        done = resumable_rows(out.with_suffix('.csv'), args, defaults) if args.resume and out else []
        df = join_runs([run(args, save=lambda rows: save([dict(r, command=r.get('command', cmd)) for r in rows]), done=done)])
    table = summarize(df)
    print(table.to_string(index=False))
    if out:
        df['command'] = df['command'].fillna(cmd) if 'command' in df else cmd
        write_csv(df, out.with_suffix('.csv'))
        runs = '' if df['command'].nunique() <= 1 else 'Runs: ' + ', '.join(f"`{c}`" for c in df['command'].dropna().unique()) + '\n\n'
        a = text_protocol(df, args, defaults)
        md = (f"# {args.title}\n\nCommand: `{cmd}`\n\n{runs}"
              f"{a.epochs} epochs (one-cycle, max lr {a.lr}, batch {a.bs}, "
              f"{'random crop + flip' if a.augment else 'no augmentation'}), {a.fraction} of the training set, "
              f"{a.holdout} of it held out to pick each run's best epoch; accuracy on the 10,000 test images at that "
              "epoch, mean ± std over seeds 0..n-1. "
              + teachers_text(df, args, defaults)
              + cache_text(df, a.views)
              + "\n\n" + (f"{args.note}\n\n" if args.note else '')
              + to_markdown(table) + "\n\nPer-seed rows: " + out.with_suffix('.csv').name + "\n")
        out.with_suffix('.md').write_text(md)
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == '__main__': main()
