"""Segmentation demonstration (issue 41): knowledge distillation of a fastai `unet_learner` teacher into a small
U-Net on a segmentation task made from Fashion-MNIST, student alone vs KD vs CWD over seeds, and the cost of the dense
teacher cache.

    python bench/segmentation.py --threads 1 --cache-cost

The task: every pixel of a Fashion-MNIST image brighter than `--threshold` (of 255) is labelled with the garment's
class (1..10), every other pixel is background (0): 11 classes. Images are zero-padded from 28x28 to 32x32 (fastai's
`CropPad`, the padding is background). A stratified subset of the training set is split into a training part and a
held-out part (which picks each run's best epoch by mean IoU); the reported numbers are on a stratified subset of the
official test set. The teacher is trained once (seed 0) and reused by every student run; its weights go to `--runs`
(git-ignored). `--resume` keeps the rows of the output CSV made with the same protocol and runs only the missing
ones."""
import argparse, contextlib, hashlib, io, json, os, platform, shlex, sys, time
from functools import partial
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import numpy as np
import pandas as pd
import torch
from torch import nn
from fastai.basics import Callback, DataBlock, IndexSplitter, Learner, accuracy, set_seed
from fastai.callback.tracker import SaveModelCallback
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import JaccardCoeffMulti
from fastai.layers import ConvLayer
from fastai.vision.data import ImageBlock, MaskBlock
from fastai.vision.core import PILImageBW
from fastai.vision.augment import CropPad
from fastai.data.transforms import Normalize
from fastai.vision.learner import unet_learner
from kd_fastai.data.core import FMNIST_CLASSES, FMNIST_MEAN, FMNIST_STD, load_fashion_mnist, stratified_split
from kd_fastai.models.zoo import resnet
from kd_fastai.experiments.runs import mean_std, to_markdown, write_csv

CODES = ('background',) + FMNIST_CLASSES  # mask value 0 is the background, 1 + label the garment's class
METHODS = ('alone', 'kd', 'cwd')


# --- data -----------------------------------------------------------------------------------------------------------
def seg_masks(x:torch.Tensor, y:torch.Tensor, threshold:int=10)->torch.Tensor:
    "uint8 masks [N,H,W] of uint8 images `x` [N,H,W] with labels `y` [N]: `1 + y` where a pixel > `threshold`, else 0"
    return ((x > threshold).long() * (y.long()[:, None, None] + 1)).to(torch.uint8)

def class_balance(masks:torch.Tensor, size:int|None=None)->np.ndarray:
    "Fraction of the pixels of `masks` [N,H,W] in each of the 11 classes, counting the zero padding to `size` x `size`"
    n = torch.bincount(masks.flatten().long(), minlength=len(CODES)).double()
    if size: n[0] += len(masks) * (size * size - masks.shape[1] * masks.shape[2])
    return (n / n.sum()).numpy()

def seg_data(n_train:int=4000, # images drawn (stratified) from the training set, the held-out ones included
             n_test:int=2000, # images drawn (stratified) from the official test set, for the reported numbers
             holdout:float=0.1, # fraction of the `n_train` images held out to choose the best epoch
             threshold:int=10, # a pixel brighter than this (0..255) belongs to the garment
             seed:int=0, # seed of the subsets
             path=None): # folder of the Fashion-MNIST files (see `find_fashion_mnist`)
    "The images, masks and split indices of the segmentation task, as a dict"
    xt, yt, xv, yv = load_fashion_mnist(path)
    tr = stratified_split(yt, n_train / len(yt), seed)[0]
    te = stratified_split(yv, n_test / len(yv), seed)[0]
    ho = stratified_split(yt[tr], holdout, seed)[0]
    x, y = torch.cat([xt[tr], xv[te]]), torch.cat([yt[tr], yv[te]])
    is_ho = torch.zeros(len(tr), dtype=torch.bool); is_ho[ho] = True
    return dict(images=x, masks=seg_masks(x, y, threshold), labels=y, train_idx=torch.nonzero(~is_ho).flatten(),
                valid_idx=ho, test_idx=len(tr) + torch.arange(len(te)))

def seg_dls(data:dict, bs:int=64, size:int=32, device=None):
    "fastai `DataLoaders` (a `DataBlock` of `PILImageBW` and `MaskBlock`) of `data`'s training and held-out images"
    x, m = data['images'].numpy(), data['masks'].numpy()
    n = len(data['train_idx']) + len(data['valid_idx'])
    block = DataBlock(blocks=(ImageBlock(cls=PILImageBW), MaskBlock(list(CODES))),
                      get_x=lambda i: x[i], get_y=lambda i: m[i], splitter=IndexSplitter(data['valid_idx'].tolist()),
                      item_tfms=CropPad(size),  # zero padding: background in the mask
                      batch_tfms=Normalize.from_stats(FMNIST_MEAN, FMNIST_STD, cuda=False))
    return block.dataloaders(list(range(n)), bs=bs, num_workers=0, device=device)

def test_loader(dls, data:dict):
    "A loader of `data`'s test images, through the same transforms as the held-out ones"
    return dls.test_dl(data['test_idx'].tolist(), with_labels=True)


# --- models and metrics ---------------------------------------------------------------------------------------------
def pixel_accuracy(inp, targ): return accuracy(inp, targ, axis=1)

def seg_metrics(): return [pixel_accuracy, JaccardCoeffMulti()]  # mean IoU over the classes present (all 11 here)
MIOU = 'jaccard_coeff_multi'  # the recorder's name of fastai's mean-IoU metric

def resnet_encoder(pretrained:bool=False, # unet_learner's argument: there are no pretrained weights
                   width:int=16, # stage widths width*(1,2,4,8)
                   layers=(2, 2, 2, 2)): # basic blocks per stage: ResNet-18's layout
    "A ResNet with basic blocks (kd_fastai's zoo, stem stride 2) for `unet_learner`, 3 input channels as fastai expects"
    return resnet(list(layers), in_channels=3, width=width, stem_stride=2)

def small_encoder(pretrained:bool=False, # unet_learner's argument: there are no pretrained weights
                  widths=(8, 16, 32)): # channels of the stages, the first at full resolution, the others at stride 2
    "A few conv-BN-ReLU blocks ending in a pooled head, which `unet_learner` cuts off"
    layers, ni = [], 3
    for i, nf in enumerate(widths): layers += [ConvLayer(ni, nf, stride=1 if i == 0 else 2), ConvLayer(nf, nf)]; ni = nf
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ni, 10))

def count_params(m:nn.Module)->int: return sum(p.numel() for p in m.parameters())

def seg_learner(dls, arch, path=None)->Learner:
    "A fastai `unet_learner` from scratch: 1 input channel, 11 outputs, pixel cross-entropy, pixel accuracy and mIoU"
    return unet_learner(dls, arch, pretrained=False, n_in=1, n_out=len(CODES),
                        loss_func=CrossEntropyLossFlat(axis=1), metrics=seg_metrics(), path=path or '.', model_dir='.')


# --- runs -----------------------------------------------------------------------------------------------------------
class PhaseTimer(Callback):
    "Wall-clock and process CPU seconds of each training phase (validation excluded)"
    order = 200  # after every other `before_train`: a callback's setup (teacher, cache fill) is not counted
    def before_fit(self): self.wall, self.cpu_times = [], []  # (`cpu` would shadow Learner.cpu)
    def before_train(self): self._t = (time.perf_counter(), time.process_time())
    def after_train(self):
        self.wall.append(time.perf_counter() - self._t[0]); self.cpu_times.append(time.process_time() - self._t[1])

def fit_best(learn:Learner, epochs:int, lr:float, fname:str, method:str='alone', teacher=None, **kwargs)->dict:
    "Train `learn` (alone, or distilling `teacher` with `method`), keep its best held-out mIoU epoch, return the record"
    timer, save = PhaseTimer(), SaveModelCallback(monitor=MIOU, comp=np.greater, fname=fname, with_opt=False)
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):  # SaveModelCallback prints
        if method == 'alone': learn.fit_one_cycle(epochs, lr, cbs=[save, timer])
        else: learn.distill(teacher, epochs, lr, method=method, cbs=[save, timer], **kwargs)
    names = list(learn.recorder.metric_names[1:-1])
    hist = pd.DataFrame([list(v) for v in learn.recorder.values], columns=names[:len(learn.recorder.values[0])])
    best = int(hist[MIOU].astype(float).idxmax())
    agree = float(hist['teacher_agreement'][best]) if 'teacher_agreement' in hist else float('nan')  # per pixel
    return dict(best_epoch=best + 1, valid_miou=float(hist[MIOU][best]), valid_teacher_agreement=agree,
                run_seconds=time.perf_counter() - t0, sec_per_epoch=float(np.mean(timer.wall)),
                cpu_sec_per_epoch=float(np.mean(timer.cpu_times)))

def evaluate(learn:Learner, dl)->dict:
    "Pixel accuracy and mean IoU of `learn.model` on `dl`"
    with learn.no_bar(), learn.no_logging(): _, acc, miou = learn.validate(dl=dl)
    return dict(test_pixel_acc=float(acc), test_miou=float(miou))

def train_teacher(data, args, folder:Path):
    "The teacher (trained once with seed 0, or loaded from `folder`) and its record"
    fname = f"teacher_{args.teacher_tag}"
    rec_file = folder/f"{fname}.json"
    set_seed(0)
    dls = seg_dls(data, args.bs, args.size)
    learn = seg_learner(dls, partial(resnet_encoder, width=args.teacher_width), folder)
    if rec_file.is_file() and (folder/f"{fname}.pth").is_file():
        learn.load(fname, with_opt=False)
        return learn, json.loads(rec_file.read_text())
    rec = dict(method='teacher', seed=0, params=count_params(learn.model), epochs=args.teacher_epochs,
               **fit_best(learn, args.teacher_epochs, args.teacher_lr, fname))
    rec.update(evaluate(learn, test_loader(dls, data)))
    rec_file.write_text(json.dumps(rec, indent=1))
    return learn, rec

def dense_support()->dict:
    "What the library does on dense logits B x C x H x W: {'kd': per-pixel KD is right, 'cwd': CWD is registered}"
    from kd_fastai.losses.logit import soft_target_loss
    from kd_fastai.core.registry import METHODS as REG
    g = torch.Generator().manual_seed(0)
    s, t, T = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g), 2.
    flat = lambda z: z.permute(0, 2, 3, 1).reshape(-1, 5)
    ref = (flat(t/T).softmax(1) * (flat(t/T).log_softmax(1) - flat(s/T).log_softmax(1))).sum(1).mean() * T * T
    try: ok = bool(torch.allclose(soft_target_loss(s, t, T=T), ref, atol=1e-5))
    except Exception: ok = False
    return dict(kd=ok, cwd='cwd' in REG)

def run_student(method:str, seed:int, data, teacher, args, folder:Path)->dict:
    "One student run: fresh weights and data order from `seed`, best held-out epoch, test numbers"
    set_seed(seed)
    dls = seg_dls(data, args.bs, args.size)  # a fresh loader: its shuffling draws from the seeded generators
    learn = seg_learner(dls, partial(small_encoder, widths=tuple(args.student_widths)), folder)
    kw = dict(T=args.T, alpha=args.alpha) if method == 'kd' else {}
    fname = f"student_{args.protocol}_{method}_s{seed}"
    rec = dict(method=method, seed=seed, params=count_params(learn.model), epochs=args.epochs,
               **fit_best(learn, args.epochs, args.lr, fname, method, teacher, **kw))
    rec.update(evaluate(learn, test_loader(dls, data)))
    return rec


# --- tables ---------------------------------------------------------------------------------------------------------
def summary(df:pd.DataFrame)->pd.DataFrame:
    "Per method: test mIoU and pixel accuracy (mean ± std over seeds), paired gain over the student alone, times"
    alone = df[df.method == 'alone'].set_index('seed')
    rows = []
    for method in [m for m in ('teacher',) + METHODS if m in set(df.method)]:
        g = df[df.method == method].sort_values('seed')
        row = {'model': 'teacher' if method == 'teacher' else 'student', 'method': method,
               'seeds': ' '.join(map(str, g.seed)), 'params': int(g.params.iloc[0]),
               'test mIoU (%)': mean_std(g.test_miou),
               'test pixel acc (%)': mean_std(g.test_pixel_acc), 'gain in mIoU (pts)': ''}
        paired = [s for s in g.seed if s in alone.index]
        if method not in ('teacher', 'alone') and paired:
            gains = g.set_index('seed').test_miou[paired] - alone.test_miou[paired]
            row['gain in mIoU (pts)'] = mean_std(gains) + f" ({(gains > 0).sum()}/{len(gains)} seeds up)"
        agree = g.get('valid_teacher_agreement', pd.Series(dtype=float)).dropna()
        row['held-out teacher agreement (%)'] = mean_std(agree) if len(agree) else ''  # KD metric, per pixel
        row.update({'best epoch': ' '.join(str(int(e)) for e in g.best_epoch),
                    'sec/epoch': round(g.sec_per_epoch.mean(), 2),
                    'CPU sec/epoch': round(g.cpu_sec_per_epoch.mean(), 2),
                    'sec/run': round(g.run_seconds.mean(), 1)})
        rows.append(row)
    return pd.DataFrame(rows)

def write_outputs(df:pd.DataFrame, data, args, cache_lines=(), notes=()):
    "Write OUT.csv (one row per run) and OUT.md (protocol, class balance, table, cache cost)"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(df, out.with_suffix('.csv'))
    bal = class_balance(data['masks'][torch.cat([data['train_idx'], data['valid_idx']])], args.size)
    widths = ', '.join(str(args.teacher_width * k) for k in (1, 2, 4, 8))
    lines = [f"# Segmentation on Fashion-MNIST: {args.title}", '', f"Command: `{args.command}`", '',
             f"Task: each 28x28 Fashion-MNIST image zero-padded to {args.size}x{args.size}; pixels > "
             f"{args.threshold}/255 take the garment's class (1..10), the rest is background (0): "
             f"{len(CODES)} classes. {len(data['train_idx'])} training images and {len(data['valid_idx'])} held out "
             "(stratified, from the training set; the held-out mIoU picks each run's best epoch), "
             f"{len(data['test_idx'])} test images (stratified, official test set) for the numbers below. mIoU is "
             "fastai's `JaccardCoeffMulti` (mean IoU over the 11 classes, background included); pixel accuracy over "
             "all pixels.", '',
             "Teacher: `unet_learner(dls, resnet_encoder, pretrained=False, n_in=1, n_out=11)` with a ResNet-18 "
             f"layout (2,2,2,2 basic blocks, stem stride 2, width {args.teacher_width}: stages {widths}; "
             f"`kd_fastai.models.zoo.resnet`), {args.teacher_epochs} epochs, one-cycle lr {args.teacher_lr}, seed 0. "
             "Student: `unet_learner` on a small encoder of conv blocks (widths "
             f"{', '.join(map(str, args.student_widths))}). Every student run: {args.epochs} epochs of "
             f"`fit_one_cycle`, lr {args.lr}, batch {args.bs}, Adam (fastai's defaults), no augmentation. KD: "
             f"`learn.distill(teacher, ..., T={args.T}, alpha={args.alpha})` (per-pixel soft targets); CWD: "
             "`learn.distill(teacher, ..., method='cwd')` with its defaults (Shu et al., ICCV 2021). Gains are "
             "paired by seed (same initialisation and data order).", '',
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, torch "
             f"{torch.__version__}, {args.threads} thread(s), one process. 'sec/epoch' is the wall-clock training "
             "phase (validation excluded), 'CPU sec/epoch' the process CPU time of it (less sensitive to the other "
             "work on the machine), 'sec/run' the whole fit with validations.", '',
             f"Class balance of the training pixels of the {args.size}x{args.size} masks (%): "
             + ', '.join(f"{c} {100*f:.1f}" for c, f in zip(CODES, bal)), '',
             to_markdown(summary(df)), '']
    lines += list(notes) + ([''] if notes else [])
    if cache_lines: lines += ['## Dense teacher cache', ''] + list(cache_lines) + ['']
    out.with_suffix('.md').write_text('\n'.join(lines))
    return out


# --- command line ---------------------------------------------------------------------------------------------------
PROTOCOL = ('n_train', 'n_test', 'holdout', 'threshold', 'size', 'bs', 'teacher_width', 'teacher_epochs', 'teacher_lr',
            'student_widths', 'epochs', 'lr', 'T', 'alpha')  # what a run's numbers depend on (the CSV rows' `protocol`)
TEACHER_PROTOCOL = PROTOCOL[:9]  # what the teacher depends on (its checkpoint's name)

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n-train', '--n_train', type=int, default=4000,
                   help='training images drawn (stratified), held-out part included')
    p.add_argument('--n-test', '--n_test', type=int, default=2000,
                   help='test images drawn (stratified) from the official test set')
    p.add_argument('--holdout', type=float, default=0.1,
                   help='fraction of the training images held out to pick the best epoch')
    p.add_argument('--threshold', type=int, default=10,
                   help='a pixel brighter than this (0..255) is garment, else background')
    p.add_argument('--size', type=int, default=32, help='images are zero-padded to size x size')
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--teacher-width', '--teacher_width', type=int, default=16,
                   help="width of the teacher's ResNet-18 layout")
    p.add_argument('--teacher-epochs', '--teacher_epochs', type=int, default=10)
    p.add_argument('--teacher-lr', '--teacher_lr', type=float, default=3e-3)
    p.add_argument('--student-widths', '--student_widths', type=int, nargs='+', default=[8, 16, 32])
    p.add_argument('--epochs', type=int, default=10, help='epochs of every student run')
    p.add_argument('--lr', type=float, default=3e-3, help='one-cycle max learning rate of every student run')
    p.add_argument('--T', type=float, default=4.0, help='KD temperature')
    p.add_argument('--alpha', type=float, default=0.9, help='KD weight (1-alpha weights the cross-entropy)')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--cache-cost', '--cache_cost', action='store_true',
                   help='measure the dense teacher cache (bytes, fill time)')
    p.add_argument('--topk', type=int, default=3, help='k of the top-k dense cache measured with --cache-cost')
    p.add_argument('--threads', type=int, default=1, help='torch threads (0: leave torch\'s default)')
    p.add_argument('--resume', action='store_true',
                   help='keep the rows of OUT.csv of the same protocol, run only the missing ones')
    p.add_argument('--runs', default='kd_runs/segmentation',
                   help='folder of the teacher and student checkpoints (git-ignored)')
    p.add_argument('--out', default='results/segmentation', help='OUT.csv and OUT.md are written')
    p.add_argument('--title', default='student alone vs KD vs CWD')
    args = p.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.command = 'python bench/segmentation.py ' + ' '.join(shlex.quote(a) for a in given)
    proto = {k: getattr(args, k) for k in PROTOCOL}
    tag = lambda d: hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    args.protocol, args.teacher_tag = tag(proto), tag({k: proto[k] for k in TEACHER_PROTOCOL})
    return args

def main(argv=None):
    args = parse(argv)
    if args.threads: torch.set_num_threads(args.threads)
    need = {m for m in args.methods if m != 'alone'}
    support = dense_support()
    missing = [m for m in sorted(need) if not support[m]]
    if missing: raise RuntimeError(f"kd_fastai cannot run {missing} on dense logits yet (per-pixel KD: "
                                   f"{support['kd']}, CWD registered: {support['cwd']}); run --methods alone, or "
                                   "update kd_fastai.")
    folder = Path(args.runs); folder.mkdir(parents=True, exist_ok=True)
    out_csv = Path(args.out).with_suffix('.csv')
    old = pd.read_csv(out_csv) if args.resume and out_csv.is_file() else pd.DataFrame()
    if len(old): old = old[old.protocol == args.protocol]
    done = set(zip(old.method, old.seed)) if len(old) else set()
    data = seg_data(args.n_train, args.n_test, args.holdout, args.threshold)
    teacher, trec = train_teacher(data, args, folder)
    print(f"teacher: {trec['params']:,} params, test mIoU {trec['test_miou']:.4f}, "
          f"pixel acc {trec['test_pixel_acc']:.4f}", flush=True)
    recs = [r for r in old.to_dict('records') if r['method'] != 'teacher']
    for seed in args.seeds:
        for method in args.methods:
            if (method, seed) in done: continue
            rec = run_student(method, seed, data, teacher.model, args, folder)
            recs.append(dict(rec, protocol=args.protocol, command=args.command))
            print(f"{method} seed {seed}: test mIoU {rec['test_miou']:.4f}, pixel acc {rec['test_pixel_acc']:.4f}, "
                  f"best epoch {rec['best_epoch']}, {rec['sec_per_epoch']:.1f} s/epoch "
                  f"({rec['cpu_sec_per_epoch']:.1f} CPU)", flush=True)
            df = pd.DataFrame([dict(trec, protocol=args.protocol, command=args.command)] + recs)
            write_outputs(df, data, args)
    df = pd.DataFrame([dict(trec, protocol=args.protocol, command=args.command)] + recs)
    cache_lines = cache_cost(teacher, data, args, df) if args.cache_cost else ()
    write_outputs(df, data, args, cache_lines)
    return df

def _timed(f):
    "Result, wall-clock and process CPU seconds of `f()`"
    t, c = time.perf_counter(), time.process_time()
    res = f()
    return res, time.perf_counter() - t, time.process_time() - c

def cache_cost(teacher:Learner, data, args, df:pd.DataFrame|None=None)->list:
    "Lines on the dense teacher cache: bytes per item and fill time (fp16, top-k) against one teacher forward pass"
    from kd_fastai.cache.store import TeacherCache
    dls = seg_dls(data, args.bs, args.size)
    dl = dls.train.new(shuffle=False, drop_last=False)  # every training item once, in order: item i has key i
    n, model = len(dl.dataset), teacher.model.eval()
    def forward():
        with torch.inference_mode(): return [model(xb).float().as_subclass(torch.Tensor) for xb, _ in dl]
    outs, fwd, fwd_cpu = _timed(forward)
    full = torch.cat(outs)
    def batches():
        i = 0
        for xb, _ in dl: yield (xb,), torch.arange(i, i + len(xb)); i += len(xb)
    lines = [f"Teacher outputs per item: {tuple(full.shape[1:])} logits ({len(CODES)} classes x "
             f"{args.size}x{args.size} pixels); one teacher forward pass over the {n} training images (loader "
             f"included, batch {args.bs}): {fwd:.2f} s ({fwd_cpu:.2f} s CPU).", '',
             '| storage | bytes per item | total | fill (s) | fill CPU (s) | fill / forward (CPU) '
             '| max abs logit error | pixels whose top class changes | mean per-pixel KL(teacher ‖ cached) |',
             '|---' * 9 + '|']
    kl = lambda a, b: float((a.log_softmax(1).exp() * (a.log_softmax(1) - b.log_softmax(1))).sum(1).mean())
    for name, kw in [('float16, all 11 classes', {}),
                     (f'top-{args.topk} of the classes (float16 + uint8 index)', dict(topk=args.topk))]:
        cache = TeacherCache(n, **kw)
        _, wall, cpu = _timed(lambda: cache.fill(model, batches()))
        got = cache.lookup(torch.arange(n))
        err = f"{float((got - full).abs().max()):.4f}" if not kw else '–'  # top-k: log-probabilities, not logits
        flips = 100 * float((got.argmax(1) != full.argmax(1)).float().mean())
        lines.append(f"| {name} | {cache.nbytes / n:,.0f} | {cache.nbytes / 2**20:.1f} MB | {wall:.2f} | {cpu:.2f} "
                     f"| {cpu / fwd_cpu:.2f} | {err} | {flips:.3f} % | {kl(full, got):.2e} |")
    fp32 = full[0].numel() * 4
    lines += ['', f"For scale: one image is {28*28} bytes (uint8), its float32 teacher output {fp32:,} bytes; the "
              f"float16 cache of all 60,000 training images would take {60000 * full[0].numel() * 2 / 2**30:.2f} GB."]
    # the user's path: one epoch of KD from the cache (filled at the start of the fit), a fresh student, seed 0
    set_seed(0)
    learn = seg_learner(seg_dls(data, args.bs, args.size), partial(small_encoder, widths=tuple(args.student_widths)))
    timer = PhaseTimer()
    try:
        with learn.no_bar(), learn.no_logging():
            _, wall, cpu = _timed(lambda: learn.distill(model, 1, args.lr, T=args.T, alpha=args.alpha, cache=True,
                                                        cache_kwargs=dict(verbose=False), cbs=[timer]))
        lines += ['', f"`learn.distill(teacher, 1, lr, cache=True)` (KD, float16 cache in memory): the fit took "
                  f"{wall:.1f} s ({cpu:.1f} s CPU) of which the training phase {timer.wall[0]:.1f} s "
                  f"({timer.cpu_times[0]:.1f} s CPU); the rest is the fill at the start and the validation."]
        per = {m: df[df.method == m].cpu_sec_per_epoch.mean() for m in ('alone', 'kd')
               if df is not None and m in set(df.method)}
        what = {'alone': 'student alone', 'kd': 'KD recomputing the teacher'}
        if per: lines[-1] += (" The runs above, training phase, mean CPU s/epoch: "
                              + ', '.join(f"{what[m]} {v:.1f}" for m, v in per.items()) + '.')
    except Exception as e:
        lines += ['', f"`learn.distill(teacher, 1, lr, cache=True)` on these loaders failed: {type(e).__name__}: {e}"]
    return lines

if __name__ == '__main__': main()
