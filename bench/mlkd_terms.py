"""How large each of MLKD's terms is on Fashion-MNIST: the gradient each one sends to the student's logits.

MLKD's batch-level term compares B x B Gram matrices of softened predictions (summed, divided by B) and its class-level
term C x C ones (summed, divided by C). With confident predictions an entry of P P^T is about 1 for two images of the
same class, so the batch term grows like B / C; an entry of P^T P is about B / C, so the class term grows like B^2 / C.
The instance term (batchmean KL) does not depend on B or C. The authors tuned the weights (0.9 each) on CIFAR-100
(C = 100) with batches of 64; the bench runs C = 10 with batches of 128, i.e. the batch term about 20 x and the class
term about 40 x heavier relative to the instance term than in the paper. This script measures it: for the shipped
teacher and a student (untrained, and trained alone for `--student-epochs`), over the student's weak-view training
batches of each size in `--bs`, the norm of the gradient of each weighted term (as `MLKDCallback` weights them on the
weak view: CE 0.1, instance/batch/class 0.9 each, median masks) with respect to the student's logits.

    python bench/mlkd_terms.py --teacher cifar_resnet56 --student cifar_resnet20 --bs 64 128
    python bench/mlkd_terms.py --teacher vgg13 --teacher-file results/teachers/vgg13_f0.06_t0.3_h0.1_e8_aug.pth --student vgg8 --out results/mlkd_terms_vgg
"""
import argparse, sys
from pathlib import Path
import pandas as pd
import torch
import torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import make_data, train  # the same split and training as the table
from kd_fastai.models.zoo import zoo_model
from kd_fastai.models.pretrained import pretrained_teacher
from kd_fastai.losses.logit import mlkd_parts, mlkd_masks
from kd_fastai.experiments.runs import to_markdown


def term_grads(s, t, y, temperatures=(2., 3., 4., 5., 6.)):
    "Norm of d(term)/d(student logits) for CE and each weak-view MLKD term with the callback's weights"
    m, cm = mlkd_masks(t)
    out = {}
    for name in ('CE', 'instance', 'batch', 'class'):
        z = s.detach().clone().requires_grad_()
        if name == 'CE': loss = 0.1 * F.cross_entropy(z, y)
        else: loss = 0.9 * mlkd_parts(z, t, temperatures, m, cm)[('instance', 'batch', 'class').index(name)]
        g, = torch.autograd.grad(loss, z)
        out[name] = float(g.norm())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default='cifar_resnet56', help='a shipped teacher, or the zoo name of --teacher-file')
    p.add_argument('--teacher-file', default=None, help="a teacher saved by bench/logit_methods.py ({'state', 'record'}), e.g. results/teachers/*.pth")
    p.add_argument('--student', default='cifar_resnet20')
    p.add_argument('--fraction', type=float, default=0.06)
    p.add_argument('--student-epochs', type=int, default=3)
    p.add_argument('--bs', type=int, nargs='+', default=[64, 128])
    p.add_argument('--batches', type=int, default=20, help='batches measured per batch size')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default='results/mlkd_terms')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dls, _, _ = make_data(args.fraction, 0.1, 128, True, None)
    if args.teacher_file:
        teacher = zoo_model(args.teacher, in_channels=1, num_classes=10)
        teacher.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in torch.load(args.teacher_file, map_location='cpu', weights_only=False)['state'].items()})
        teacher.eval()
    else: teacher = pretrained_teacher(args.teacher).float().eval()
    source = f"{args.teacher} from `{args.teacher_file}`" if args.teacher_file else f"shipped {args.teacher}"
    torch.manual_seed(0)
    xs, ys = zip(*[(x, y) for x, y in dls.train])  # augmented (weak-view) training batches
    x, y = torch.cat(xs).as_subclass(torch.Tensor).float(), torch.cat(ys).as_subclass(torch.Tensor).long()
    students = {'untrained': zoo_model(args.student, in_channels=1, num_classes=10)}
    students[f'trained alone {args.student_epochs} epochs'], _ = train(dls, args.student, args.student_epochs, 1e-2, 0)
    rows = []
    for state, model in students.items():
        model.eval()
        for bs in args.bs:
            got = []
            for i in range(min(args.batches, len(x) // bs)):
                xb, yb = x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]
                with torch.no_grad(): s, t = model(xb), teacher(xb)
                got.append(term_grads(s, t, yb))
            g = pd.DataFrame(got).mean()
            rows.append({'student': state, 'batch size': bs, **{f'grad {k}': f'{v:.4f}' for k, v in g.items()},
                         'batch / instance': round(g['batch'] / g['instance'], 2),
                         'class / instance': round(g['class'] / g['instance'], 2),
                         'CE share (%)': round(100 * g['CE'] / g.sum(), 1)})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    cmd = 'python bench/mlkd_terms.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    df.to_csv(out.with_suffix('.csv'), index=False)
    out.with_suffix('.md').write_text(
        f"# MLKD's terms on Fashion-MNIST ({args.teacher} -> {args.student})\n\nCommand: `{cmd}`\n\n"
        "Mean norm of the gradient of each weak-view term, weighted as `MLKDCallback` weights it, with respect to the "
        f"student's logits, over {args.batches} augmented training batches per batch size (teacher: {source}). "
        "The instance term is a batch mean; the batch term grows like B / C and the class term like "
        "B^2 / C (see the script's docstring).\n\n" + to_markdown(df) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == '__main__': main()
