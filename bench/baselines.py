"""Seed 000's baseline table on Fashion-MNIST: each model of the seed's list trained alone, beside the seed's numbers.

The patient protocol of `bench/patient.py` (the code of `bench/logit_methods.py`): all the training images but a
stratified 10% held out, random crop + flip, `--epochs` of fastai's one-cycle (max lr 0.01, batch 128); each run keeps
the weights of its best held-out epoch, evaluated once on the 10,000 test images; seeds 0..n-1, per-seed rows in the
CSV (written after every run: `--resume` goes on from it, and a run killed part-way goes on from its last epoch, bit
for bit as if never killed: `bench/logit_methods.py`'s `EpochCheckpoint`). The seed reports one number per model without saying how
many runs or which epoch; its column is shown as it is. Models of the seed's list that are not in the zoo at the seed's
size (its torchvision ResNets and EfficientNets, 11-64 M parameters) can be named with `--models torchvision:resnet18`.

    python bench/baselines.py --threads 1                                    # the custom CNNs of seed 000, 3 seeds, 20 epochs
    python bench/baselines.py --models model_25k_wo_dw model_25k_w_dw --seed-list 0 --threads 1   # one process's share
    python bench/baselines.py --from-csv results/baselines_000.csv           # the table of the finished rows
    python bench/baselines.py --from-csv results/baselines_runs/*.csv results/patient_runs/seed*.csv   # with the patient runs' student-alone rows
    python bench/baselines.py --models model_25k_wo_dw --fraction 0.02 --epochs 1 --seeds 1 --out /tmp/base_smoke   # a smoke test
"""
import argparse, shlex, sys
from pathlib import Path
import pandas as pd
import torch
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import make_data, train
from kd_fastai.experiments.runs import mean_std, to_markdown, write_csv

# Seed 000's "Baseline Accuracy (%) FMNIST" column and its parameter counts (10 classes, 3-channel input in the seed)
SEED_000 = {'model_1M_wo_dw': (92.67, 1180970), 'model_1M_w_dw': (91.89, 1159474), 'model_600k_wo_dw': (92.93, 590378),
            'model_600k_w_dw': (92.56, 599913), 'model_340k_wo_dw': (93.17, 340010), 'model_340k_w_dw': (90.28, 344508),
            'model_143k_wo_dw': (92.68, 143218), 'model_143k_w_dw': (90.0, 143406), 'model_25k_wo_dw': (90.7, 25298),
            'model_25k_w_dw': (90.27, 25612), 'torchvision:resnet18': (89.06, 11181642), 'torchvision:resnet34': (87.18, 21289802),
            'torchvision:resnet50': (90.21, 23528522)}
CUSTOM = [m for m in SEED_000 if m.startswith('model_')]
PAIR = 'no teacher'  # the `pair` column of the per-seed rows (the leaderboard's schema)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=CUSTOM, help='zoo names (default: the custom CNNs of seed 000, smallest last)')
    p.add_argument('--seeds', type=int, default=3, help='seeds 0..n-1')
    p.add_argument('--seed-list', type=int, nargs='+', default=None, help='run only these of the seeds 0..n-1')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--fraction', type=float, default=1.0, help='stratified fraction of the training set')
    p.add_argument('--holdout', type=float, default=0.1, help='stratified fraction of it held out to pick the best epoch')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--lr', type=float, default=1e-2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--resume', action='store_true', help='keep the rows of OUT.csv of the same protocol and run the missing ones; '
                   'a run killed part-way goes on from its last epoch (its checkpoint in --checkpoints)')
    p.add_argument('--checkpoints', default='kd_runs/checkpoints', help="folder of the runs' checkpoints (one per run under way, "
                   'rewritten after every epoch, removed when its row is written)')
    p.add_argument('--from-csv', nargs='+', default=None, metavar='CSV', help='train nothing: the table of these per-seed rows')
    p.add_argument('--note', default='', help="a paragraph for OUT.md under the table (e.g. which machine ran which rows)")
    p.add_argument('--out', default='results/baselines_000', help='writes OUT.md and OUT.csv')
    return p.parse_args(argv)


PROTOCOL = ('epochs', 'fraction', 'holdout', 'bs', 'lr')  # what makes two runs comparable


def kept_rows(csv:Path, args)->list:
    "The rows of `csv` run with the same protocol as `args` (else an error: another --out, or remove the file)"
    if not csv.exists(): return []
    df = pd.read_csv(csv)
    for k in PROTOCOL:
        if k in df and (df[k] != getattr(args, k)).any():
            raise SystemExit(f"{csv} holds runs with another --{k} ({df[k].iloc[0]} there, {getattr(args, k)} here): another --out, or remove it.")
    return df.to_dict('records')


def baseline_rows(csv)->pd.DataFrame:
    "The student-alone rows of a CSV of this script, or of `bench/logit_methods.py`/`bench/patient.py` (protocol read from each row's command)"
    df = pd.read_csv(csv)
    df = df[df.method == 'baseline'].copy()
    if len(df) and any(k not in df for k in PROTOCOL):
        from logit_methods import parse_args as bench_args
        from patient import DEFAULTS as PATIENT
        parsed = [bench_args(shlex.split(c)[2:], PATIENT if 'patient.py' in c.split()[1] else None) for c in df.command]
        for k in PROTOCOL: df[k] = [getattr(a, k) for a in parsed]
    df['pair'] = PAIR
    return df


def table(df:pd.DataFrame)->pd.DataFrame:
    out = []
    for model, g in df.groupby('model', sort=False):
        ref, ref_params = SEED_000.get(model, (float('nan'), None))
        out.append({'model': model, 'params': int(g.params.iloc[0]), 'seed 000 params': ref_params or '–', 'seeds': len(g),
                    'test accuracy (%)': mean_std(list(g.test_acc)), 'per seed (%)': ' / '.join(f"{a*100:.2f}" for a in g.test_acc),
                    'seed 000 (%)': '–' if ref != ref else f"{ref:.2f}",
                    'difference (points)': '–' if ref != ref else f"{g.test_acc.mean()*100 - ref:+.2f}",
                    'best epoch': f"{g.best_epoch.mean():.1f}", 'sec/epoch': f"{g.sec_per_epoch.mean():.1f}"})
    return pd.DataFrame(out).sort_values('params', ascending=False)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    cmd = 'python bench/baselines.py ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.from_csv:
        df = pd.concat([baseline_rows(f) for f in args.from_csv]).drop_duplicates(['model', 'seed']).reset_index(drop=True)
        mixed = [k for k in PROTOCOL if df[k].nunique() > 1]
        if mixed: raise SystemExit(f"The rows joined differ in {', '.join(mixed)}: join only runs of one protocol.")
    else:
        torch.set_num_threads(args.threads)
        rows = kept_rows(out.with_suffix('.csv'), args) if args.resume else []
        have = {(r['model'], r['seed']) for r in rows}
        dls, _, sizes = make_data(args.fraction, args.holdout, args.bs, augment=True)
        print(f"{sizes[0]} training images, {sizes[1]} held out, {sizes[2]} test; {len(have)} runs kept", flush=True)
        seeds = [s for s in range(args.seeds) if args.seed_list is None or s in args.seed_list]
        for seed in seeds:
            for model in args.models:
                if (model, seed) in have: continue
                ckpt = Path(args.checkpoints)/f"{out.name}_{model.replace(':', '_')}_seed{seed}.pt"
                if not args.resume: ckpt.unlink(missing_ok=True)  # a fresh table: no run goes on from an old checkpoint
                _, rec = train(dls, model, args.epochs, args.lr, seed, checkpoint=ckpt)
                rows.append(dict(pair=PAIR, model=model, method='baseline', seed=seed, **rec, command=cmd,
                                 **{k: getattr(args, k) for k in PROTOCOL}))
                write_csv(pd.DataFrame(rows), out.with_suffix('.csv'))  # after every run, whole even if stopped while writing
                ckpt.unlink(missing_ok=True)
                print(f"{model} seed {seed}: {rec['test_acc']*100:.2f}% test (held-out {rec['heldout_acc']*100:.2f}%, "
                      f"best epoch {rec['best_epoch']}, {rec['sec_per_epoch']:.1f} s/epoch)", flush=True)
        df = pd.DataFrame(rows)
    tab = table(df)
    print(tab.to_string(index=False))
    runs = ', '.join(f"`{c}`" for c in df['command'].dropna().unique())
    first = df.iloc[0]
    md = (f"# Seed 000's baseline table on Fashion-MNIST\n\nCommand: `{cmd}`\n\nRuns: {runs}\n\n"
          f"Each model trained alone: {first.epochs} epochs of one-cycle (max lr {first.lr}, batch {first.bs}, random crop + "
          f"flip) on {first.fraction} of the training set less a stratified {first.holdout} held out; each run's best "
          "held-out epoch evaluated once on the 10,000 test images; mean ± std over seeds 0..n-1. `seed 000 (%)` is the "
          "seed's FMNIST column as published (its protocol is not stated; its parameter counts are for 3-channel input).\n\n"
          + to_markdown(tab) + f"\n\nPer-seed rows: {out.with_suffix('.csv').name}\n"
          + (f"\n{args.note}\n" if args.note else '')
          + (f"\nNot run yet, of the seed's list: {', '.join(f'`{m}` ({a:.2f}%)' for m, (a, _) in SEED_000.items() if m not in set(df.model))}.\n"
             if set(SEED_000) - set(df.model) else ''))
    out.with_suffix('.md').write_text(md)
    if args.from_csv: df.to_csv(out.with_suffix('.csv'), index=False)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == '__main__': main()
