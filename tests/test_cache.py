"""Runtime checks of kd_fastai.cache under the newest fastai/fastcore (the notebook nbs/14_cache.ipynb holds the full tests)."""
import random, warnings
import pytest
import torch
from torch import nn
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.metrics import accuracy
from kd_fastai.data import synthetic_dls
from kd_fastai.kd import KDCallback
from kd_fastai.teacher import FrozenTeacher
from kd_fastai.cache import (CachedKDCallback, TeacherCache, IndexedTensorBatchDL, indexed_dls,
                             cache_nbytes, random_reasons)


def small_net(n_classes=3, width=8):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, n_classes))


class CaptureTrainLosses(Callback):
    order = 90
    def before_fit(self): self.vals = []
    def after_loss(self):
        if self.training: self.vals.append(self.learn.loss.item())


def fit_losses(dls, cb, epochs=1):
    torch.manual_seed(1)
    learn, rec = Learner(dls, small_net(), metrics=accuracy), CaptureTrainLosses()
    for dl in dls.loaders: dl.rng = random.Random(0)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 0., cbs=[cb, rec])
    return learn, rec.vals


@pytest.fixture(scope='module')
def setup():
    torch.manual_seed(0)
    return small_net(width=16), indexed_dls(synthetic_dls(n_train=64, n_valid=24, bs=16, seed=0, device='cpu'))


def test_cached_equals_recomputed(setup):
    teacher, dls = setup
    _, ref = fit_losses(dls, KDCallback(teacher), epochs=2)
    cb = CachedKDCallback(teacher, verbose=False)
    learn, got = fit_losses(dls, cb, epochs=2)
    assert len(got) == len(ref) == 8
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-3
    assert cb.caches['train'].nbytes == 64 * 3 * 2 and 'valid' in cb.caches
    assert teacher.training and not dls.train.with_keys


def test_disk_cache_restart_and_invalidation(setup, tmp_path):
    teacher, dls = setup
    c1 = CachedKDCallback(teacher, path=tmp_path, verbose=False)
    fit_losses(dls, c1)
    c2 = CachedKDCallback(teacher, path=tmp_path, verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*teacher cache')
        fit_losses(dls, c2)
    assert c2.caches['train'].fill_seconds is None
    assert torch.equal(c2.caches['train'].lookup(range(64)), c1.caches['train'].lookup(range(64)))
    t2 = small_net(width=16)
    with pytest.warns(UserWarning, match='different teacher'): fit_losses(dls, CachedKDCallback(t2, path=tmp_path, verbose=False))
    other = indexed_dls(synthetic_dls(n_train=64, n_valid=24, bs=16, seed=3, device='cpu'))
    with pytest.warns(UserWarning, match='different data'): fit_losses(other, CachedKDCallback(t2, path=tmp_path, verbose=False))


def test_augmentation_refused_or_replayed(setup):
    teacher, _ = setup
    aug = indexed_dls(synthetic_dls(n_train=32, bs=16, augment=True, device='cpu'))
    assert random_reasons(aug.train)
    with pytest.raises(ValueError, match='training loader is random'): fit_losses(aug, CachedKDCallback(teacher, verbose=False))
    views = indexed_dls(synthetic_dls(n_train=32, bs=16, augment=True, device='cpu'), views=2)
    cb = CachedKDCallback(teacher, verbose=False)
    fit_losses(views, cb)
    assert cb.caches['train'].n_items == 64
    with pytest.raises(TypeError, match='indexed_dls'): fit_losses(synthetic_dls(device='cpu'), CachedKDCallback(teacher, verbose=False))


def test_workers_carry_indices():
    dls = indexed_dls(synthetic_dls(n_train=48, bs=16, seed=0, device='cpu'))
    dl = dls.train.new(num_workers=2, with_keys=True)
    for xb, yb, keys in dl: assert torch.equal(yb, dl.dataset.y[keys])


def test_sizes_topk_and_fast_teacher(tmp_path):
    assert cache_nbytes(60000, 10) == 1_200_000
    logits = torch.randn(10, 5)
    c = TeacherCache(10, n_classes=5, topk=2, path=tmp_path).fill(nn.Identity(), [((logits,), torch.arange(10))])
    assert sum(f.stat().st_size for f in tmp_path.glob('*.bin')) == c.nbytes == 10 * 2 * 3
    assert 'top-2' in TeacherCache.load(tmp_path).report()
    m, x = small_net(), torch.randn(4, 1, 8, 8)
    ft = FrozenTeacher(m, dtype=torch.bfloat16)
    ref = FrozenTeacher(m)
    assert (ft(x) - ref(x)).abs().max() < 0.1
    ref.restore(); ft.restore()  # nested freezes unwind last-in first-out
    assert m.training
