"""Teacher-output cache (issue 7): seconds per training epoch of the plain student, of the teacher's forward pass
alone, of KD recomputing the teacher (KDCallback, and KDCallback with a bf16-autocast FrozenTeacher), of the one-time
cache fill and of KD from the cache, and of fasterai's KnowledgeDistillationCallback on the same models when a
Python with fasterai installed is given. All in one run, on one machine, so the ratios are what counts.

    python bench/teacher_cache.py --fraction 0.1 --threads 1 --fasterai-python /tmp/fasterai_venv/bin/python

Targets: cached KD epoch <= 1.15 x plain epoch; uncached KD <= 1.05 x (plain + teacher forward).
The teacher is untrained (timing only: the cost of a forward pass does not depend on the weights)."""
import argparse, json, math, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import torch
import pandas as pd
from fastai.learner import Learner
from fastai.torch_core import set_seed
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.kd import KDCallback
from kd_fastai.experiments.runs import EpochTimer, to_markdown
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, also when run via runpy
from kd_epoch import teacher_epoch
from kd_fastai.cache.store import TeacherCache, cache_fingerprint
from kd_fastai.cache.kd import CachedKDCallback

TEACHER_KW = dict(width=32, stem_stride=1)


def make_teacher(name):
    set_seed(1)
    return zoo_model(name, in_channels=1, **(TEACHER_KW if name.startswith('resnet') else {}))


def fit_times(dls, student, cbs, epochs=1):
    "Seconds of each training phase (validation excluded) of a fresh student"
    set_seed(0)
    learn, timer = Learner(dls, zoo_model(student, in_channels=1)), EpochTimer()
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 1e-3, cbs=[timer] + cbs)
    return timer.times


def fasterai_epoch(args):
    "Runs inside the fasterai environment: one epoch of fasterai's KnowledgeDistillationCallback"
    from functools import partial
    from fasterai.distill.all import KnowledgeDistillationCallback, SoftTarget
    dls = fashion_mnist_dls(bs=args.bs, fraction=args.fraction, seed=0)
    teacher = make_teacher(args.teacher)
    cb = KnowledgeDistillationCallback(teacher, partial(SoftTarget, T=4.0), weight=0.9)
    return fit_times(dls, args.student, [cb])[0]


def main(args):
    if args.threads: torch.set_num_threads(args.threads)
    if args.fasterai_only:
        print(json.dumps({'fasterai': fasterai_epoch(args)}))
        return
    dls = fashion_mnist_dls(bs=args.bs, fraction=args.fraction, seed=0, val_bs=512)
    teacher = make_teacher(args.teacher)
    n = len(dls.train_ds)
    fit_times(dls, args.student, [])  # warm-up
    T_FWD, KD, FAST = 'teacher forward alone (FrozenTeacher, bs %d)' % args.bs, 'KD recomputing the teacher (KDCallback)', 'KD recomputing, FrozenTeacher(dtype=bf16)'
    FILL, CACHED, REUSE, FA = ('cache fill, once (inference mode, bs %d)' % (
        args.fill_bs or (4 * args.bs if getattr(dls.device, 'type', 'cpu') == 'cuda' else args.bs)), 'KD from the cache',
                               'cache reuse by a later run (fingerprint + load)', 'fasterai KnowledgeDistillationCallback (0.4.1)')
    rows = {k: [] for k in ('plain student', T_FWD, KD, FAST, FILL, CACHED, REUSE)}
    heavy = {T_FWD: lambda: teacher_epoch(dls, teacher),
             KD: lambda: fit_times(dls, args.student, [KDCallback(teacher, valid_metrics=False)])[0],
             FAST: lambda: fit_times(dls, args.student, [KDCallback(teacher, teacher_dtype=torch.bfloat16, valid_metrics=False)])[0]}
    fa_note = ''
    if args.fasterai_python:
        def fasterai():
            cmd = [args.fasterai_python, __file__, '--fasterai-only', '--fraction', str(args.fraction), '--bs', str(args.bs),
                   '--teacher', args.teacher, '--student', args.student, '--threads', str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode: raise RuntimeError(res.stderr.strip().splitlines()[-1])
            return json.loads(res.stdout.strip().splitlines()[-1])['fasterai']
        heavy[FA] = fasterai
    else: fa_note = "fasterai not measured (no --fasterai-python given)"
    with tempfile.TemporaryDirectory() as d:
        cb = CachedKDCallback(teacher, path=d, valid_metrics=False, fill_bs=args.fill_bs, verbose=False)
        fit_times(dls, args.student, [cb])  # fills the cache (kept in the callback for the later fits)
        cache = cb.caches['train']
        rows[FILL].append(cache.fill_seconds)
        # cheap measures interleaved with the expensive ones, so that background load hits them alike
        for name in [None] + list(heavy):
            rows['plain student'] += fit_times(dls, args.student, [])
            rows[CACHED] += fit_times(dls, args.student, [cb])
            if name is None: continue
            try: rows.setdefault(name, []).append(heavy[name]())
            except RuntimeError as e:
                if name != FA: raise
                fa_note = f"fasterai run failed: {e}"
        assert cb.caches['train'] is cache and cache.fill_seconds == rows[FILL][0]  # the later fits replayed, never refilled
        t0 = time.perf_counter()  # a later run: fingerprint + memory-mapped load
        TeacherCache.load(Path(d)/'train', cache_fingerprint(teacher, dls.train))
        rows[REUSE].append(time.perf_counter() - t0)
        report = cache.report().replace(d, '<tmp>')
    rows = {k: v for k, v in rows.items() if v}
    med = {k: statistics.median(v) for k, v in rows.items()}
    plain, tfwd = med['plain student'], med[T_FWD]
    df = pd.DataFrame([{'measure': k, 'sec/epoch': round(v, 3), 'x plain': round(v / plain, 2),
                        'runs': ', '.join(f'{x:.2f}' for x in rows[k])} for k, v in med.items()])
    r_cached, r_kd, r_fast = med[CACHED] / plain, med[KD] / (plain + tfwd), med[FAST] / (plain + tfwd)
    cmd = (f"python bench/teacher_cache.py --teacher {args.teacher} --student {args.student} --fraction {args.fraction} "
           f"--bs {args.bs}" + (f" --fill-bs {args.fill_bs}" if args.fill_bs else '') + f" --threads {args.threads}"
           + (f" --fasterai-python {args.fasterai_python}" if args.fasterai_python else ''))
    teacher_desc = f"{args.teacher}({', '.join(f'{k}={v}' for k, v in TEACHER_KW.items())})" if args.teacher.startswith('resnet') else args.teacher
    text = (f"# Teacher-output cache: seconds per training epoch\n\nCommand: `{cmd}`\n\n"
            f"Fashion-MNIST, {n} training images (fraction {args.fraction}), batch {args.bs}; teacher {teacher_desc} "
            f"({count_parameters(teacher):,} params, untrained: timing only), student {args.student} "
            f"({count_parameters(zoo_model(args.student, in_channels=1)):,} params). Times are training phases only "
            f"(validation excluded; KD callbacks with valid_metrics=False). 'runs' lists each epoch measured (cheap measures "
            f"interleaved with the expensive ones); the table shows the median. The cache fill is part of the first cached fit only. torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}; "
            f"the machine is shared with other processes, so compare ratios within this run.\n\n"
            + to_markdown(df) + "\n\n"
            f"- cached KD epoch / plain epoch = {r_cached:.2f} (target <= 1.15: {'met' if r_cached <= 1.15 else 'NOT met'})\n"
            f"- uncached KD epoch / (plain + teacher forward) = {r_kd:.2f} (target <= 1.05: {'met' if r_kd <= 1.05 else 'NOT met'})\n"
            f"- uncached KD with FrozenTeacher(dtype=bf16) / (plain + fp32 teacher forward) = {r_fast:.2f}\n"
            f"- break-even: fill + e cached epochs < e uncached KD epochs from e = "
            f"{math.floor(med[FILL] / max(med[KD] - med[CACHED], 1e-9)) + 1} epoch(s) on\n"
            f"- cache: {report}\n" + (f"- {fa_note}\n" if fa_note else ''))
    print(text)
    out = ROOT/'results'/'teacher_cache.md'
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    df.to_csv(out.with_suffix('.csv'), index=False)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--teacher', default='resnet18')
    p.add_argument('--student', default='model_25k_wo_dw')
    p.add_argument('--fraction', type=float, default=0.1)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--fill-bs', type=int, default=None, help='batch size of the cache fill (default: CachedKDCallback chooses)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--fasterai-python', default=None, help='python of a separate environment with fasterai installed')
    p.add_argument('--fasterai-only', action='store_true', help=argparse.SUPPRESS)
    main(p.parse_args())
