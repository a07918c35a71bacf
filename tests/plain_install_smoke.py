"""A fastai user's first minutes with kd_fastai, in an environment that holds kd_fastai and its runtime requirements only.

Run by `tests/plain_install.py` with the fresh environment's python, from a folder outside the checkout; `--plain` also
asserts that the environment is a plain install (no accelerate, nbdev or pytest; nothing beyond kd_fastai's runtime
requirements; kd_fastai imported from that environment). Exits nonzero on any failure.
"""
import argparse, importlib.util, re, sys, sysconfig, tempfile, time
from importlib import metadata
from pathlib import Path

_T0 = time.perf_counter()
def _log(msg): print(f'[smoke {time.perf_counter() - _T0:5.1f} s] {msg}', flush=True)
def _norm(name): return re.sub(r'[-_.]+', '-', name).lower()


def check_plain():
    "Nothing of the dev toolchain is importable, and every visible distribution is one that kd_fastai needs"
    present = [m for m in ('accelerate', 'nbdev', 'pytest', 'execnb') if importlib.util.find_spec(m) is not None]
    assert not present, f'not a plain install: {present} can be imported'
    from packaging.requirements import Requirement  # fastai's requirement, so it is here
    need, done, todo = {}, {}, [('kd-fastai', frozenset())]
    while todo:
        name, extras = todo.pop()
        if name in done and extras <= done[name]: continue
        if name not in need: need[name] = metadata.distribution(name)
        done[name] = done.get(name, frozenset()) | extras
        for r in map(Requirement, need[name].requires or []):
            if r.marker is None or any(r.marker.evaluate({'extra': e}) for e in ('', *done[name])):
                todo.append((_norm(r.name), frozenset(map(_norm, r.extras))))
    extra = sorted({_norm(d.metadata['Name']) for d in metadata.distributions()} - set(need))
    assert not extra, f'not a plain install: {extra} are installed but kd_fastai does not need them'
    _log(f'plain install: {len(need)} distributions, all needed by kd_fastai; accelerate, nbdev, pytest absent')


_p = argparse.ArgumentParser()
_p.add_argument('--plain', action='store_true', help='also check that the environment is a plain install')
_args = _p.parse_args()
if _args.plain: check_plain()

from kd_fastai.all import *  # noqa: F403 (the public API, as a user imports it)
import kd_fastai, torch, sysconfig, tempfile  # (again: the star import must not shadow them)
from importlib import metadata
from pathlib import Path
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.data.core import DataLoaders
site = Path(sysconfig.get_paths()['purelib']).resolve()
if _args.plain: assert site in Path(kd_fastai.__file__).resolve().parents, f'kd_fastai comes from {kd_fastai.__file__}, not from {site}'
_log(f'from kd_fastai.all import * : kd_fastai {kd_fastai.__version__} from {Path(kd_fastai.__file__).parent}, '
    f'fastai {metadata.version("fastai")}, fastcore {metadata.version("fastcore")}, torch {torch.__version__}')

eps = [ep for ep in metadata.distribution('kd-fastai').entry_points if ep.group == 'console_scripts']
for ep in eps: assert callable(ep.load()), f'the console script {ep.name} = {ep.value} is not callable'
_log(f"console script(s) {', '.join(f'{ep.name} = {ep.value}' for ep in eps)} load")

names = pretrained_names()  # noqa: F405
assert names, 'no shipped teacher'
name = min(names, key=lambda n: pretrained_info(n).get('params', float('inf')))  # noqa: F405
teacher = pretrained_teacher(name)  # noqa: F405
before = {k: v.clone() for k, v in teacher.state_dict().items()}
_log(f"shipped teacher {name!r} ({pretrained_info(name).get('params')} parameters, "  # noqa: F405
    f"test accuracy {pretrained_info(name).get('test_acc')}) loaded")  # noqa: F405

try: fm = find_fashion_mnist()  # noqa: F405
except Exception as e: fm, why = None, e
if fm is not None:
    dls = fashion_mnist_dls(bs=64, fraction=0.01, val_bs=256, device='cpu')  # noqa: F405  (600 training images)
    dls = DataLoaders(dls.train, dls.valid.new(n=512))  # validate on the first 512 test images: keeps the check short
    xb, yb = dls.valid.one_batch()
    with torch.no_grad(): acc = (teacher(xb).argmax(1) == yb).float().mean().item()
    assert acc > 0.8, f'the shipped teacher gets {acc:.3f} of 256 test images right (expected about its test accuracy)'
    _log(f'Fashion-MNIST from {fm}: {len(dls.train_ds)} training images, 512 test images; teacher accuracy on 256 of them {acc:.3f}')
else:
    dls = synthetic_dls(n_train=256, n_valid=128, n_classes=10, size=28, bs=64, device='cpu')  # noqa: F405
    _log(f'Fashion-MNIST not found ({type(why).__name__}): synthetic 28x28 images, {len(dls.train_ds)} training')

student = zoo_model('model_25k_wo_dw', in_channels=1, num_classes=10)  # noqa: F405
learn = Learner(dls, student, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-3)
vals = learn.recorder.values[-1]
assert len(vals) >= 3 and all(v == v for v in vals), f'missing or non-finite losses/metrics: {vals}'
assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items()), 'distillation changed the teacher'
_log(f'learn.distill(teacher, 1, 1e-3): {dict(zip(learn.recorder.metric_names[1:], [round(float(v), 4) for v in vals]))}')

with tempfile.TemporaryDirectory() as d:
    f = Path(d)/'student.pkl'
    learn.export(f)
    loaded = load_learner(f)
    item = dls.valid_ds.items[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    with loaded.no_bar(): q = loaded.predict(item)[2]
    assert len(q) == 10 and torch.allclose(p, q), f'the loaded student predicts {q}, the student {p}'
    assert not any(hasattr(cb, 'teacher') for cb in loaded.cbs), 'the exported learner holds the teacher'
    _log(f'export ({f.stat().st_size // 1024} kB) -> load_learner -> predict: {loaded.dls.vocab[q.argmax()]!r}, as the student')
_log('smoke test OK')

