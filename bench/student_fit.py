"""How well trained students fit their own training images: accuracy on the training images (no augmentation), the
held-out images and the test set, and top-1 agreement with the teacher, for saved weights of the patient protocol.

A student that scores no better on its training images than on held-out ones is limited by its capacity, not by
overfitting: a regulariser (soft targets, class-wise consistency) has nothing to take away there. Weights: files written
by `learn.save` (`BestWeights` keeps each run's best epoch in the loaders' folder) or `bench/logit_methods.py`'s
`{'state': ...}` files; same split as `bench/patient.py` (all the data, 10% held out).

    python bench/student_fit.py --model model_25k_wo_dw --weights baseline=/tmp/kd_bench_x/models/best_model_25k_wo_dw.pth KD=/tmp/kd_bench_y/models/best_model_25k_wo_dw.pth --out results/patient_runs/student_fit
"""
import argparse, sys
from pathlib import Path
import pandas as pd
import torch
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import make_data
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from kd_fastai.models.zoo import zoo_model
from kd_fastai.models.pretrained import pretrained_teacher
from kd_fastai.experiments.runs import to_markdown


def load_weights(name, f):
    "The zoo model `name` with the weights of `f` (a `learn.save` file or a `{'state': ...}` checkpoint)"
    ck = torch.load(f, map_location='cpu', weights_only=False)
    state = ck.get('model', ck.get('state', ck)) if isinstance(ck, dict) else ck
    m = zoo_model(name, in_channels=1, num_classes=10); m.load_state_dict(state)
    return m.eval()


def predictions(model, dls, dl):
    "Top-1 predictions and targets over `dl` with fastai's `get_preds` (its batch transforms: normalisation, no augmentation)"
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): probs, targs = learn.get_preds(dl=dl)
    return probs.argmax(1), targs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='model_25k_wo_dw', help='zoo name of the students')
    p.add_argument('--teacher', default='model_340k_wo_dw', help='shipped teacher')
    p.add_argument('--weights', nargs='+', required=True, metavar='LABEL=FILE')
    p.add_argument('--fraction', type=float, default=1.0)
    p.add_argument('--holdout', type=float, default=0.1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default='', help='writes OUT.md and OUT.csv')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dls, _, sizes = make_data(args.fraction, args.holdout, 512, augment=False)
    train_dl = dls.train.new(shuffle=False, drop_last=False, bs=512)
    sets = {'training images': train_dl, 'held-out images': dls[1], 'test images': dls[2]}
    teacher = pretrained_teacher(args.teacher).eval().to(dls.device)
    t_pred = {k: predictions(teacher, dls, dl) for k, dl in sets.items()}
    rows = [dict(model=f'{args.teacher} (teacher)', **{f'{k} (%)': round((p == y).float().mean().item() * 100, 2)
                                                     for k, (p, y) in t_pred.items()})]
    for item in args.weights:
        label, f = item.split('=', 1)
        m = load_weights(args.model, f).to(dls.device)
        row = dict(model=f'{args.model} ({label})')
        for k, dl in sets.items():
            pr, y = predictions(m, dls, dl)
            row[f'{k} (%)'] = round((pr == y).float().mean().item() * 100, 2)
            row[f'agreement with teacher, {k.split()[0]} (%)'] = round((pr == t_pred[k][0]).float().mean().item() * 100, 2)
        rows.append(row)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    if args.out:
        out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out.with_suffix('.csv'), index=False)
        cmd = 'python bench/student_fit.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
        out.with_suffix('.md').write_text(
            f"# How well the students fit their training images\n\nCommand: `{cmd}`\n\n{sizes[0]} training images "
            f"(no augmentation here), {sizes[1]} held out, {sizes[2]} test. The teacher was trained on all 60,000 training "
            "images (the held-out ones included).\n\n" + to_markdown(df) + "\n")


if __name__ == '__main__': main()
