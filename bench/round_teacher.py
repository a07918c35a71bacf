"""Make a bench teacher reproducible across sessions: round its weights through fp16 in place (so that an fp16 copy
holds exactly the weights every later run uses), re-measure its test accuracy on the bench's split, and write the fp16
copy that `results/teachers/` commits (DEVELOPERS.md, "Long tables span sessions").

Run it once, after `bench/logit_methods.py` has saved the teacher and before any student has used it:

    python bench/round_teacher.py kd_runs/teachers/vgg13_f0.06_t0.3_h0.1_e8_aug.pth vgg13 --fraction 0.06 --teacher-fraction 0.3 --copy results/teachers/
"""
import argparse, sys
from pathlib import Path
import torch
from fastai.vision.all import Learner, CrossEntropyLossFlat, accuracy
sys.path.insert(0, str(Path(__file__).parent))
from logit_methods import make_data
from kd_fastai.models.zoo import zoo_model
from kd_fastai.models.pretrained import half_state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('file', help="the teacher file bench/logit_methods.py saved ({'state', 'record'})")
    p.add_argument('name', help='its zoo name')
    p.add_argument('--fraction', type=float, default=0.06)
    p.add_argument('--teacher-fraction', type=float, default=None)
    p.add_argument('--holdout', type=float, default=0.1)
    p.add_argument('--copy', default='results/teachers/', help='folder of the fp16 copy')
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    f = Path(args.file)
    ck = torch.load(f, map_location='cpu', weights_only=False)
    ck['state'] = {k: v.float() if v.is_floating_point() else v for k, v in half_state(ck['state']).items()}
    model = zoo_model(args.name, in_channels=1, num_classes=10)
    model.load_state_dict(ck['state'])
    dls, _, _ = make_data(args.fraction, args.holdout, 128, True, args.teacher_fraction)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): acc = float(learn.validate(dl=dls[2])[1])
    print(f"{f.name}: test accuracy {ck['record']['test_acc']:.4f} as trained, {acc:.4f} with fp16-rounded weights")
    ck['record'].update(test_acc=acc, fp16_rounded=True)
    torch.save(ck, f)
    out = Path(args.copy); out.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state=half_state(ck['state']), record=ck['record']), out/f.name)
    print(f"wrote {out/f.name}")


if __name__ == '__main__': main()
