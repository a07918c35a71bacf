"""Train the teachers that ship inside kd_fastai (`kd_fastai.models.pretrained.pretrained_teacher`) on all of Fashion-MNIST.

Each teacher trains on all 60,000 training images (fastai one-cycle, Adam, random crop + flip) and keeps the weights
of its last epoch: nothing is picked, the 10,000 test images are measured once at the end. The fp16 weights go to
`kd_fastai/weights/NAME.pth` with an entry in `kd_fastai/weights/pretrained.json` (architecture, test accuracy,
epochs, this command, SHA-256 fingerprint). With `--route-every K` the teacher's training route (its weights after
every K-th epoch, `RouteRecorder`) ships too, for RCO (`kd_fastai.multistep.rco.pretrained_route`).

    python bench/train_teachers.py model_143k_wo_dw --epochs 12 --threads 2
    python bench/train_teachers.py model_340k_wo_dw --epochs 12 --route-every 2 --threads 1
    python bench/train_teachers.py resnet34 --arch-kwargs '{"width": 8, "stem_stride": 2}' --ship-as resnet34_w8 --epochs 10 --threads 1
    python bench/train_teachers.py model_25k_wo_dw --epochs 1 --fraction 0.02 --out /tmp/teachers   # a smoke test
"""
import argparse, json, shlex, shutil, sys, tempfile, time
from pathlib import Path
import torch
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.models.pretrained import train_pretrained, save_pretrained, WEIGHTS_DIR
from kd_fastai.multistep.rco import RouteRecorder, ship_route


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('names', nargs='+', help='zoo names of the teachers to train')
    p.add_argument('--epochs', type=int, default=12)
    p.add_argument('--lr', type=float, default=1e-2, help='max learning rate of fit_one_cycle')
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--fraction', type=float, default=1.0, help='stratified fraction of the training set (1.0 for shipping)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--route-every', type=int, default=None, help='also ship the route: the weights after every K-th epoch (RCO anchors)')
    p.add_argument('--arch-kwargs', type=json.loads, default=None, help='zoo_model options of the architecture (JSON), e.g. \'{"width": 8, "stem_stride": 2}\'')
    p.add_argument('--ship-as', default=None, help='the shipped name (one architecture only; default: its zoo name), e.g. resnet34_w8')
    p.add_argument('--out', default=None, help=f'folder of the weights and index (default: {WEIGHTS_DIR})')
    args = p.parse_args(argv)
    if args.ship_as and len(args.names) != 1: p.error('--ship-as names one teacher: give one architecture')
    if args.threads: torch.set_num_threads(args.threads)
    cmd = 'python bench/train_teachers.py ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    dls = fashion_mnist_dls(bs=args.bs, fraction=args.fraction, augment=True, val_bs=512)
    for arch in args.names:
        name = args.ship_as or arch
        t0 = time.perf_counter()
        route_dir = Path(tempfile.mkdtemp(prefix=f'route_{name}_'))
        rec = RouteRecorder(route_dir, every=args.route_every) if args.route_every else None
        learn = train_pretrained(arch, dls, args.epochs, args.lr, progress=sys.stdout.isatty(), cbs=rec, arch_kwargs=args.arch_kwargs)
        minutes = (time.perf_counter() - t0) / 60
        with learn.no_bar(), learn.no_logging(): acc = float(learn.validate()[1])  # the test set, measured once
        record = dict(test_acc=round(acc, 4), epochs=args.epochs, lr=args.lr, bs=args.bs, train_images=len(dls.train_ds),
                   augment='random crop + flip', train_minutes=round(minutes, 1), command=cmd)
        f = save_pretrained(learn.model, name, record, folder=args.out)
        if rec is not None:
            anchors = ship_route(rec.route, name, folder=args.out)
            print(f"{name}: route shipped, anchors after epochs {rec.route.epochs} ({len(anchors)} files + the teacher)", flush=True)
        shutil.rmtree(route_dir, ignore_errors=True)
        print(f"{name}: {acc*100:.2f}% test after {args.epochs} epochs ({minutes:.1f} min), {f.stat().st_size/2**20:.2f} MB -> {f}", flush=True)


if __name__ == '__main__': main()
