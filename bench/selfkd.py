"""Self-distillation on Fashion-MNIST: baseline vs CS-KD vs Tf-KD self-training vs Tf-KD virtual teacher.

Every method trains the same zoo student for the same epochs with the same one-cycle schedule, batch size and seeds
on a stratified fraction of the training set, and is validated on the 10k test set (final-epoch accuracy, no
checkpoint picked on the test set). Tf-KD self-training takes as teacher the baseline model of the same seed (which
is exactly what its teacher stage would train: same seed, same schedule); its student starts from the same seeded
initialisation, i.e. `learn.self_distill(..., student='initial')`.

    python bench/selfkd.py --epochs 2 --threads 1 --out results/selfkd   # the committed table (results/selfkd.md, .csv)
    python bench/selfkd.py --epochs 1 --seeds 0 --models model_25k_wo_dw --fraction 0.05   # a smoke test
"""
import argparse, shlex, sys, time
from pathlib import Path
import torch
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.experiments.runs import run_training, summarize_runs, to_markdown
from kd_fastai.multistep.selfkd import CSKDCallback, VirtualTeacherCallback  # also patches DataLoaders/Learner

METHODS = ('baseline', 'CS-KD', 'Tf-KD self', 'Tf-KD virtual')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['model_25k_wo_dw', 'model_143k_wo_dw'], help='zoo students')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    p.add_argument('--epochs', type=int, default=2, help='epochs of every method')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--fraction', type=float, default=0.25, help='stratified fraction of the training set')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--lr', type=float, default=1e-2, help='max learning rate of fit_one_cycle')
    p.add_argument('--cskd-T', type=float, default=4.0)
    p.add_argument('--cskd-lam', type=float, default=1.0)
    p.add_argument('--partner-bn', default='train', choices=('train', 'eval'))
    p.add_argument('--self-T', type=float, default=4.0)
    p.add_argument('--self-alpha', type=float, default=0.1)
    p.add_argument('--vt-T', type=float, default=20.0)
    p.add_argument('--vt-alpha', type=float, default=0.1)
    p.add_argument('--vt-a', type=float, default=0.99)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--out', default='results/selfkd', help='writes OUT.md and OUT.csv; empty: no files')
    return p.parse_args(argv)


def run(args, log=lambda s: print(s, flush=True)):
    "Train every (model, method, seed); return the run records"
    torch.set_num_threads(args.threads)
    dls = fashion_mnist_dls(bs=args.bs, fraction=args.fraction, seed=42)
    pdls = dls.with_class_pairs()  # the one call CS-KD needs
    mk = dict(in_channels=1, num_classes=10)
    runs = []
    for model in args.models:
        for seed in args.seeds:
            base = None
            for method in args.methods:
                t0 = time.perf_counter()
                if method == 'baseline' or (method == 'Tf-KD self' and base is None):
                    r = run_training(dls, model, args.epochs, args.lr, seed, method='baseline', model_kwargs=mk)
                    base = r
                    if method != 'baseline':  # a teacher only: not a row of the table
                        log(f"{model} seed {seed} teacher for Tf-KD self: {r['accuracy']*100:.2f}%")
                        r = None
                if method == 'CS-KD':
                    r = run_training(pdls, model, args.epochs, args.lr, seed, method=method, model_kwargs=mk,
                                     cbs=[CSKDCallback(T=args.cskd_T, lam=args.cskd_lam, partner_bn=args.partner_bn)])
                elif method == 'Tf-KD self':
                    teacher = base['learn'].model
                    train = lambda learn, e, lr: learn.self_distill(e, lr, T=args.self_T, alpha=args.self_alpha,
                                                                    teacher=teacher, metrics=False)
                    r = run_training(dls, model, args.epochs, args.lr, seed, method=method, model_kwargs=mk, train=train)
                elif method == 'Tf-KD virtual':
                    r = run_training(dls, model, args.epochs, args.lr, seed, method=method, model_kwargs=mk,
                                     cbs=[VirtualTeacherCallback(T=args.vt_T, alpha=args.vt_alpha, a=args.vt_a)])
                if r is None: continue
                runs.append(r)
                log(f"{model} seed {seed} {method:14s} acc {r['accuracy']*100:.2f}%  "
                    f"({r['sec_per_epoch']:.1f} s/epoch, {time.perf_counter()-t0:.0f} s)")
    return runs


def table(runs):
    "Mean ± std per (model, method), with the gain over the same model's baseline"
    df = summarize_runs(runs)
    base = df[df.method == 'baseline'].set_index('model').acc_mean
    df['vs baseline (pts)'] = [f"{m - base[mo]:+.2f}" if mo in base else '' for mo, m in zip(df.model, df.acc_mean)]
    per_seed = {}
    for r in runs: per_seed.setdefault((r['model'], r['method']), []).append(f"{r['accuracy']*100:.2f}")
    df['per seed (%)'] = [' / '.join(per_seed[(mo, me)]) for mo, me in zip(df.model, df.method)]
    return df


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t0 = time.perf_counter()
    runs = run(args)
    df = table(runs)
    cols = ['model', 'params', 'method', 'seeds', 'accuracy (%)', 'vs baseline (pts)', 'per seed (%)', 'sec/epoch']
    md = to_markdown(df, cols)
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = 'python bench/selfkd.py ' + ' '.join(shlex.quote(a) for a in argv)
        head = ["# Self-distillation on Fashion-MNIST (CS-KD, Tf-KD)", '',
                f"Command: `{cmd.strip()}`", '',
                f"Fraction {args.fraction} of the training set (stratified, seed 42), validation on the 10k test set; "
                f"{args.epochs} epochs of `fit_one_cycle` (lr {args.lr}, batch {args.bs}) for every method; seeds {args.seeds}; "
                f"accuracy of the final epoch, mean ± sample std over seeds. torch threads: {args.threads}; "
                f"total wall-clock {time.perf_counter()-t0:.0f} s.", '',
                f"- CS-KD: `CSKDCallback(T={args.cskd_T}, lam={args.cskd_lam}, partner_bn='{args.partner_bn}')` on "
                "`dls.with_class_pairs()` (each batch: B samples + B same-class partners; sec/epoch includes the partner pass).",
                f"- Tf-KD self: `learn.self_distill(epochs, lr, T={args.self_T}, alpha={args.self_alpha}, teacher=<baseline model of the "
                "same seed>)`; the student starts from the same seeded initialisation as its teacher.",
                f"- Tf-KD virtual: `VirtualTeacherCallback(T={args.vt_T}, alpha={args.vt_alpha}, a={args.vt_a})`.",
                "- sec/epoch: training phase only, measured on a shared 2-core machine under load: noisy, compare within a row group.", '', '']
        out.with_suffix('.md').write_text('\n'.join(head) + md + '\n')
        df.to_csv(out.with_suffix('.csv'), index=False)
    return df


if __name__ == '__main__': main()
