"""Why some logit methods trail KD in `results/logit_methods.md`: forward-only measurements of the same teachers.

For each teacher of the table (loaded from `--teachers`, as `bench/logit_methods.py` saved them) on the students'
held-out images (the same split):
- the teacher's accuracy on the plain images and on MLKD's strong views (`StrongAugment()`, what MLKD's teacher sees
  and the student must match on half of its batches);
- the targets the student is asked to match: the mean probability of the true class and the entropy of the teacher's
  softened distribution, for KD (T=4) and for KD+LS (standardised logits, T=2, the LS authors' setting);
- the share of the gradient weight on labels vs teacher: CE weight / (CE weight + KD weight x T^2) for KD (0.1, 0.9,
  T=4) and KD+LS (0.1, 9, T=2) (DIST and DKD keep CE weight 1).

    python bench/logit_diagnostics.py --pairs vgg13:vgg8 cifar_resnet56:cifar_resnet20 --fraction 0.06 --teacher-fraction 0.15 --teacher-epochs 6

With `--shipped NAME ...` those teachers are kd_fastai's shipped ones (`pretrained_teacher`), as `--shipped-teachers` in
`bench/logit_methods.py`.
"""
import argparse, sys
from pathlib import Path
import pandas as pd
import torch
import torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import make_data  # the same split as the table
from kd_fastai.models.zoo import zoo_model
from kd_fastai.models.pretrained import pretrained_teacher
from kd_fastai.losses.logit import standardize_logits
from kd_fastai.logit.mlkd import StrongAugment
from kd_fastai.experiments.runs import to_markdown


def soft_stats(logits, y, T, standardize=False):
    z = standardize_logits(logits) if standardize else logits
    p = F.softmax(z / T, -1)
    return float(p.gather(1, y[:, None]).mean()), float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pairs', nargs='+', default=['vgg13:vgg8', 'cifar_resnet56:cifar_resnet20'])
    p.add_argument('--fraction', type=float, default=0.06)
    p.add_argument('--teacher-fraction', type=float, default=0.15)
    p.add_argument('--holdout', type=float, default=0.1)
    p.add_argument('--teacher-epochs', type=int, default=6)
    p.add_argument('--teachers', default='kd_runs/teachers')
    p.add_argument('--shipped', nargs='*', default=[], help="teachers loaded from kd_fastai's shipped weights")
    p.add_argument('--out', default='results/logit_diagnostics')
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dls, _, _ = make_data(args.fraction, args.holdout, 128, True, None)
    xs, ys = zip(*[(x, y) for x, y in dls.valid])
    x, y = torch.cat(xs).as_subclass(torch.Tensor).float(), torch.cat(ys).as_subclass(torch.Tensor).long()
    rows = []
    for pair in args.pairs:
        t = pair.split(':')[0]
        tf = args.teacher_fraction if args.teacher_fraction > args.fraction else args.fraction
        f = Path(args.teachers)/f'{t}_f{args.fraction}_t{tf}_h{args.holdout}_e{args.teacher_epochs}_aug.pth'
        if t in args.shipped: model = pretrained_teacher(t).float()
        else:
            model = zoo_model(t, in_channels=1, num_classes=10)
            model.load_state_dict(torch.load(f, map_location='cpu', weights_only=False)['state'])
        model.eval()
        with torch.no_grad():
            plain = model(x)
            strong = torch.cat([model(StrongAugment()(x[i:i+256])) for i in range(0, len(x), 256)])
        kd_true, kd_ent = soft_stats(plain, y, 4.)
        ls_true, ls_ent = soft_stats(plain, y, 2., standardize=True)
        rows.append({'teacher': t + (' (shipped)' if t in args.shipped else ''), 'held-out images': len(y),
                     'acc plain (%)': round(float((plain.argmax(1) == y).float().mean()) * 100, 2),
                     'acc strong view (%)': round(float((strong.argmax(1) == y).float().mean()) * 100, 2),
                     'p(true) KD T=4': round(kd_true, 3), 'entropy KD T=4': round(kd_ent, 3),
                     'p(true) LS T=2': round(ls_true, 3), 'entropy LS T=2': round(ls_ent, 3)})
    df = pd.DataFrame(rows)
    w = pd.DataFrame([{'method': 'KD', 'CE weight': 0.1, 'teacher term': '0.9 x T^2 KL, T=4'},
                      {'method': 'KD+LS', 'CE weight': 0.1, 'teacher term': '9 x T^2 KL on standardised logits, T=2'},
                      {'method': 'DKD (+LS)', 'CE weight': 1.0, 'teacher term': '(1 x TCKD + 8 x NCKD) x T^2, warm-up'},
                      {'method': 'DIST', 'CE weight': 1.0, 'teacher term': '2 x T^2 x (inter + intra correlation), T=4'},
                      {'method': 'MLKD', 'CE weight': '0.1 (two views)', 'teacher term': '0.9 x multi-level, T=2..6'},
                      {'method': 'SDD', 'CE weight': 0.1, 'teacher term': '0.9 x regional KL, T=4'},
                      {'method': 'CLKD', 'CE weight': 0.1, 'teacher term': 'instance + class + correlation terms'}])
    print(df.to_string(index=False))
    cmd = 'python bench/logit_diagnostics.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    df.to_csv(out.with_suffix('.csv'), index=False)
    out.with_suffix('.md').write_text(f"# Diagnostics of the logit-method table\n\nCommand: `{cmd}`\n\n" + to_markdown(df)
                                      + "\n\nLoss weights (authors' defaults, as the table ran them):\n\n" + to_markdown(w) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == '__main__': main()
