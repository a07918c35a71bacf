"""Seed 002's protocol at CPU scale on Fashion-MNIST: a thin ResNet34 teacher trained here from scratch, ResNet students
trained without teacher, with "simultaneous" feature distillation, and stagewise (block by block, then the head),
with all the training data and with a stratified quarter of it.

Compute is equalised: every epoch is 15,000 training samples (the quarter set itself, or a fresh random draw from the
full 60,000), so the two settings differ only in how many distinct images the student sees. Accuracy is measured
once, at the end, on the full 10k test set; a 2,000-image slice of it is the per-epoch validation set (nothing is
selected on it: `keep_best=False`, the last epoch counts).

    python bench/stagewise.py            # the committed table (about 25 minutes on one CPU thread)
    python bench/stagewise.py --shipped-teacher resnet34_w8 --all-seeds resnet10 resnet14 resnet18 --full-seeds 0 1 2
        # from the thin ResNet34 shipped with kd_fastai (trained on all 60,000 images: `bench/train_teachers.py`)
    python bench/stagewise.py --variants '2 per block'=results/stagewise_patient.csv 'head KD'=results/stagewise_runs/head_kd.csv --out OUT
        # one table of finished runs side by side (each CSV's command is read from the .md beside it)
"""
import argparse, shlex, sys, time
from pathlib import Path
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fastai.data.core import DataLoaders
from kd_fastai.data.core import fashion_mnist_dls, TensorImageDL, TensorImageData
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.experiments.runs import run_training, mean_std, to_markdown, write_csv
from kd_fastai.multistep.stagewise import *  # noqa: F401,F403 (patches Learner.fit_stagewise / fit_simultaneous)


class SampledDL(TensorImageDL):
    "Training loader whose epoch is `n` images drawn at random (without replacement) from the whole data set"
    def get_idxs(self): return self.rng.sample(range(len(self.dataset)), self.n)


def make_dls(fraction, samples, bs, n_valid, seed=42):
    dls = fashion_mnist_dls(bs=bs, fraction=fraction, seed=seed, device='cpu')
    trn = dls.train
    if len(trn.dataset) > samples:
        trn = trn.new(cls=SampledDL, n=samples)  # same data set and batch transforms, `samples` random images per epoch
    test = dls.valid
    vds = test.dataset
    small = test.new(TensorImageData(vds.x[:n_valid, 0], vds.y[:n_valid], vds.vocab), shuffle=False, drop_last=False)
    return DataLoaders(trn, small, device='cpu'), test


def test_accuracy(learn, test_dl):
    with learn.no_bar(), learn.no_logging(): return float(learn.validate(dl=test_dl)[1])


def get_teacher(args):
    if args.shipped_teacher:
        from kd_fastai.models.pretrained import pretrained_teacher
        teacher = pretrained_teacher(args.shipped_teacher)
        info = teacher.pretrained_info
        if info['arch'] != 'resnet34' or info.get('arch_kwargs', {}).get('width') != args.width:
            raise SystemExit(f"--shipped-teacher {args.shipped_teacher} is {info['arch']} {info.get('arch_kwargs', {})}: "
                             f"the students' blocks are joined to a resnet34 of width {args.width} (--width).")
        return teacher, None
    path = Path(args.teacher_path)
    teacher = zoo_model('resnet34', in_channels=1, width=args.width, stem_stride=2)
    if path.exists() and not args.retrain_teacher:
        teacher.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        return teacher, None
    dls = fashion_mnist_dls(bs=args.bs, device='cpu')
    t0 = time.time()
    r = run_training(dls, teacher, args.teacher_epochs, lr=args.lr, seed=0, method='teacher')
    print(f"teacher: {r['accuracy']*100:.2f}% after {args.teacher_epochs} epochs ({time.time()-t0:.0f}s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.state_dict(), path)
    return teacher, time.time() - t0


def run(args):
    torch.set_num_threads(args.threads)
    teacher, t_time = get_teacher(args)
    student_kw = dict(in_channels=1, width=args.width, stem_stride=2)
    rows = []
    settings = [('full', 1.0, args.full_seeds), ('1/4', 0.25, args.seeds)]
    _, test_dl = make_dls(1.0, args.samples, args.bs, args.n_valid)
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    tl = Learner(make_dls(1.0, args.samples, args.bs, args.n_valid)[0], teacher, metrics=accuracy)
    t_acc = test_accuracy(tl, test_dl)
    print(f"teacher resnet34 (width {args.width}): test accuracy {t_acc*100:.2f}%", flush=True)
    n_stages = 6  # stem, layer1..4, head
    stage_eps = [args.stage_epochs] * (n_stages - 1) + [args.head_epochs]
    stage_lrs = [args.stage_lr] * (n_stages - 1) + [args.head_lr]
    methods = {
        'no teacher': (args.epochs, None),
        'simultaneous': (args.epochs, lambda learn, ep, lr: learn.fit_simultaneous(teacher, ep, lr, feat_weight=args.feat_weight, metrics=False)),
        'stagewise': (sum(stage_eps), lambda learn, ep, lr: learn.fit_stagewise(teacher, epochs_per_stage=stage_eps, lrs=stage_lrs, keep_best=False,
                                                                                        kd_alpha=args.head_kd_alpha, T=args.head_T)),
    }
    # every (setting, student, method) with the first seed first; the other seeds (only for `--all-seeds`) at the end
    jobs = [(st, s, m, seeds[0]) for st, _, seeds in settings for s in args.students for m in args.methods]
    jobs += [(st, s, m, seed) for st, _, seeds in settings for s in args.students if s in args.all_seeds
             for seed in seeds[1:] for m in args.methods]
    fractions, all_dls = {st: f for st, f, _ in settings}, {}
    partial = Path(args.out).with_suffix('.partial.csv')
    partial.parent.mkdir(parents=True, exist_ok=True)
    if args.resume and partial.exists():  # the finished runs of an interrupted call with the same command
        rows = pd.read_csv(partial).to_dict('records')
        done = {(r['data'], r['model'], r['method'], r['seed']): r for r in rows}
        stale = [k for k, r in done.items() if r['epochs'] != methods[k[2]][0]]
        if stale: raise SystemExit(f"{partial} holds runs with other epochs ({stale[:3]}...): not the same command; move it away")
        jobs = [j for j in jobs if j not in done]
        print(f"resuming: {len(rows)} finished runs read from {partial}, {len(jobs)} to go", flush=True)
    for setting, student, method, seed in jobs:
        if setting not in all_dls: all_dls[setting] = make_dls(fractions[setting], args.samples, args.bs, args.n_valid)[0]
        dls, (epochs, train) = all_dls[setting], methods[method]
        t0 = time.time()
        r = run_training(dls, student, epochs, lr=args.lr, seed=seed, method=method, train=train, model_kwargs=student_kw)
        acc = test_accuracy(r['learn'], test_dl)
        rows.append(dict(data=setting, model=student, method=method, seed=seed, params=r['params'],
                         epochs=epochs, accuracy=acc, seconds=time.time() - t0))
        print(f"{setting:>4} {student} {method:>12} seed {seed}: {acc*100:.2f}% ({time.time()-t0:.0f}s)", flush=True)
        write_csv(pd.DataFrame(rows), partial)  # progress (`--resume` goes on from it), whole even if stopped while writing
    return pd.DataFrame(rows), t_acc, count_parameters(teacher)


def variants_table(items, method='stagewise'):
    "(table, commands): the `method` runs of each `LABEL=CSV` side by side, one column per label, per data setting and student"
    cols, cmds = {}, {}
    for item in items:
        label, f = item.split('=', 1)
        df = pd.read_csv(f)
        df = df[df.method == method]
        for (data, model), g in df.groupby(['data', 'model'], sort=False):
            cols.setdefault((data, model), {})[f"{label} ({int(g.epochs.iloc[0])} epochs)"] = f"{mean_std(g.accuracy)} ({len(g)})"
        md = Path(f).with_suffix('.md')
        cmds[label] = next((l.split('`')[1] for l in md.read_text().splitlines() if l.startswith('Command: `')), '') if md.exists() else ''
    tab = pd.DataFrame([{'data': d, 'student': m, **c} for (d, m), c in cols.items()]).fillna('')
    return tab, cmds


def table(df, t_acc):
    out = []
    for (data, model), g in df.groupby(['data', 'model'], sort=False):
        row = {'data': data, 'student': model, 'params': int(g.params.iloc[0])}
        for m, gm in g.groupby('method', sort=False):
            row[f'{m} (%)'] = mean_std(gm.accuracy)
        st = g[g.method == 'stagewise'].accuracy
        if len(st): row['teacher - stagewise'] = f"{(t_acc - st.mean())*100:.2f}"
        row['seeds'] = len(g[g.method == g.method.iloc[0]])
        out.append(row)
    return pd.DataFrame(out)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--students', nargs='+', default=['resnet10', 'resnet14', 'resnet18'])
    p.add_argument('--methods', nargs='+', default=['no teacher', 'simultaneous', 'stagewise'])
    p.add_argument('--width', type=int, default=8)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds of the 1/4-data runs')
    p.add_argument('--full-seeds', type=int, nargs='+', default=[0], help='seeds of the full-data runs')
    p.add_argument('--all-seeds', nargs='*', default=['resnet10'], help='students run with every seed; the others with the first seed only')
    p.add_argument('--epochs', type=int, default=5, help='epochs of no-teacher and simultaneous training')
    p.add_argument('--stage-epochs', type=int, default=2, help='epochs of each block stage')
    p.add_argument('--head-epochs', type=int, default=2)
    p.add_argument('--lr', type=float, default=1e-2, help='one-cycle max lr of no-teacher/simultaneous training')
    p.add_argument('--stage-lr', type=float, default=1e-2)
    p.add_argument('--head-lr', type=float, default=1e-2)
    p.add_argument('--head-kd-alpha', type=float, default=0., help="weight of KD on the teacher's logits in the head stage (0: labels only)")
    p.add_argument('--head-T', type=float, default=4.0, help='temperature of that KD')
    p.add_argument('--feat-weight', type=float, default=1.0)
    p.add_argument('--teacher-epochs', type=int, default=3)
    p.add_argument('--samples', type=int, default=15000, help='training samples per epoch')
    p.add_argument('--n-valid', type=int, default=2000)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--teacher-path', default='/tmp/kd_fastai_bench/stagewise_teacher_resnet34_w8.pth')
    p.add_argument('--retrain-teacher', action='store_true')
    p.add_argument('--shipped-teacher', default=None, help="a shipped teacher of kd_fastai (e.g. resnet34_w8) instead of one trained here")
    p.add_argument('--out', default=str(ROOT / 'results' / 'stagewise'))
    p.add_argument('--teacher-only', action='store_true')
    p.add_argument('--resume', action='store_true', help='keep the finished runs of OUT.partial.csv (same command) and run the rest')
    p.add_argument('--variants', nargs='+', default=None, metavar='LABEL=CSV', help='no training: finished tables side by side')
    p.add_argument('--title', default='Stagewise training: variants side by side')
    args = p.parse_args()
    if args.variants:
        tab, cmds = variants_table(args.variants)
        out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
        cmd = 'python bench/stagewise.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
        out.with_suffix('.md').write_text(
            f"# {args.title}\n\nCommand: `{cmd}`\n\nRuns:\n" + ''.join(f"- {l}: `{c}`\n" for l, c in cmds.items())
            + "\nTest accuracy (%) of the stagewise runs, mean ± std (seeds) over the 10k test set; the protocol of each run is "
            "in its own file.\n\n" + to_markdown(tab) + "\n")
        tab.to_csv(out.with_suffix('.csv'), index=False)
        print(to_markdown(tab)); sys.exit()
    if args.teacher_only:
        torch.set_num_threads(args.threads); get_teacher(args); sys.exit()
    t0 = time.time()
    df, t_acc, t_params = run(args)
    tab = table(df, t_acc)
    md = to_markdown(tab)
    cmd = 'python bench/stagewise.py ' + ' '.join(sys.argv[1:])
    if args.shipped_teacher:
        from kd_fastai.models.pretrained import pretrained_info
        t_cmd = pretrained_info(args.shipped_teacher)['command']
    text = (f"# Stagewise distillation on Fashion-MNIST (CPU scale)\n\nCommand: `{cmd.strip()}` "
            f"({(time.time()-t0)/60:.1f} min, {args.threads} thread)\n\n"
            + (f"Teacher: the shipped `{args.shipped_teacher}` (resnet34 width {args.width}, stem stride 2, {t_params} "
               f"parameters, trained on all 60,000 training images: `{t_cmd}`): test accuracy {t_acc*100:.2f}%.\n\n"
               if args.shipped_teacher else
               f"Teacher: resnet34 width {args.width}, stem stride 2, {t_params} parameters, trained here from scratch on all "
               f"the training data for {args.teacher_epochs} epochs: test accuracy {t_acc*100:.2f}%.\n\n") +
            f"Students: width {args.width}, stem stride 2. Every epoch is {args.samples} training images. No teacher and "
            f"simultaneous: {args.epochs} epochs, one-cycle lr {args.lr}; simultaneous adds MSE of stem, layer1..4 "
            f"(weight {args.feat_weight}). Stagewise: {args.stage_epochs} epoch(s) per block (stem, layer1..4, lr {args.stage_lr}), "
            f"then {args.head_epochs} epochs of the head on labels (lr {args.head_lr}"
            + (f", KD on the teacher's logits with alpha {args.head_kd_alpha}, T {args.head_T}" if args.head_kd_alpha else '')
            + "). Accuracy: full 10k test set, "
            "mean ± std over the seeds.\n\n" + md + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.md').write_text(text)
    df.to_csv(out.with_suffix('.csv'), index=False)
    print(text)
