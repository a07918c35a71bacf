"""The logit methods (DKD, DIST, MLKD, SDD, CLKD, LS) under the newest fastai: `Learner.distill(method=...)` on a fastai
`DataBlock` of PNG files, the teacher handed back, no hook left, export -> load_learner -> predict."""
import pytest
import torch
from torch import nn
from fastai.vision.all import get_image_files, Normalize, Learner, load_learner, accuracy
from kd_fastai.all import *
from fastai.callback.core import Callback
from kd_fastai.core.registry import method_callback
from kd_fastai.test_utils import small_net, write_png_folder, folder_dls



@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = write_png_folder(tmp_path_factory.mktemp('png'), n_train=22, n_valid=11)
    dls = folder_dls(d, bs=16, batch_tfms=Normalize.from_stats([0.5], [0.25]))
    teacher = small_net(width=16)
    tl = Learner(dls, teacher)
    with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(2, 1e-2)
    return d, dls, teacher.train()


@pytest.mark.parametrize('method', ['kd+ls', 'dkd', 'dkd+ls', 'dist', 'mlkd', 'sdd', 'clkd'])
def test_method_distill_export_predict(folder, method):
    d, dls, teacher = folder
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=d)
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 2, 1e-2, method=method)
    assert 'distill_loss' in learn.recorder.metric_names
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(not m._forward_hooks for m in list(learn.model.modules()) + list(teacher.modules()))
    item = get_image_files(d/'valid')[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    learn.export(f'{method}.pkl')
    loaded = load_learner(d/f'{method}.pkl')
    with loaded.no_bar(): torch.testing.assert_close(loaded.predict(item)[2], p)


def test_unknown_method_lists_the_available_ones(folder):
    _, dls, teacher = folder
    learn = Learner(dls, small_net(width=4))
    with pytest.raises(ValueError, match='available: kd, dkd, dist, mlkd, sdd, clkd'): learn.distill(teacher, 1, method='hint')


class _Counting(nn.Module):
    "A teacher that counts the images it has seen"
    def __init__(self, m): super().__init__(); self.m, self.seen = m, 0
    def forward(self, x): self.seen += len(x); return self.m(x)


class _TrainLosses(Callback):
    order = 90
    def before_fit(self): self.vals = []
    def after_loss(self):
        if self.training: self.vals.append(self.learn.loss.item())


def _losses(dls, teacher, method, cache):
    import random
    torch.manual_seed(1)
    learn, rec = Learner(dls, small_net(width=4)), _TrainLosses()
    for dl in dls.loaders: dl.rng = random.Random(0)
    with learn.no_bar(), learn.no_logging():
        learn.distill(teacher, 2, 0., method=method, fit='fit', cbs=rec, warmup=0, cache=cache,
                      cache_kwargs=dict(verbose=False) if cache else None)
    return rec.vals


@pytest.mark.parametrize('method', ['dkd', 'dist', 'sdd'])
def test_cached_method_equals_live_and_fills_once(folder, method):
    d, dls, teacher = folder
    ref = _losses(dls, teacher, method, cache=False)
    counted = _Counting(teacher)
    got = _losses(dls, counted, method, cache=True)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-3, atol=1e-3)
    assert counted.seen == len(dls.train_ds) + len(dls.valid_ds)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert type(method_callback('mlkd', teacher, cache=True)).__name__ == 'CachedMLKDCallback'


@pytest.mark.parametrize('method', ['sdd', 'mlkd'])
def test_cached_own_values_on_a_datablock_export_and_predict(folder, method):
    "SDD's regional logits and MLKD's weak and strong views from the cache, on the DataBlock: no hook left, export -> load_learner -> predict"
    d, dls, teacher = folder
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=d)
    with learn.no_bar(), learn.no_logging():
        learn.distill(teacher, 2, 1e-2, method=method, cache=True, cache_kwargs=dict(verbose=False))
    assert not any('Cached' in type(cb).__name__ for cb in learn.cbs)  # the method's callback goes with the fit
    assert 'distill_loss' in learn.recorder.metric_names
    assert all(not m._forward_hooks for m in list(learn.model.modules()) + list(teacher.modules()))
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    item = get_image_files(d/'valid')[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    learn.export(f'{method}_cached.pkl')
    loaded = load_learner(d/f'{method}_cached.pkl')
    with loaded.no_bar(): torch.testing.assert_close(loaded.predict(item)[2], p)


@pytest.fixture(scope='module')
def vl_folder(tmp_path_factory):
    "PNG folder (16 px), the DataBlock with and without aug_transforms, a vision_learner resnet18 teacher"
    from fastai.vision.all import aug_transforms, vision_learner, resnet18
    d = write_png_folder(tmp_path_factory.mktemp('vl'), n_train=8, n_valid=4, size=16)
    norm = Normalize.from_stats([0.5], [0.25])
    aug = folder_dls(d, bs=8, batch_tfms=[*aug_transforms(size=16, min_scale=0.8), norm])
    plain = folder_dls(d, bs=8, batch_tfms=norm)
    return d, aug, plain, vision_learner(plain, resnet18, pretrained=False, n_in=1).model.train()


@pytest.mark.parametrize('method,cache', [(m, False) for m in ('kd', 'kd+ls', 'dkd', 'dkd+ls', 'dist', 'mlkd', 'mlkd+ls', 'sdd', 'clkd')]
                                         + [(m, True) for m in ('dkd', 'mlkd', 'sdd')])
def test_logit_method_vision_learner(vl_folder, method, cache):
    "vision_learner resnet18 student and teacher: live on the DataBlock with aug_transforms, from the cache on the plain one"
    from fastai.vision.all import vision_learner, resnet18
    d, aug, plain, teacher = vl_folder
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = vision_learner(plain if cache else aug, resnet18, pretrained=False, n_in=1, metrics=accuracy, path=d)
    kw = dict(cache=True, cache_kwargs=dict(verbose=False)) if cache else {}
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-3, method=method, **kw)
    assert 'distill_loss' in learn.recorder.metric_names
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in list(learn.model.modules()) + list(teacher.modules()))
    assert not any(isinstance(cb, KDCallback) for cb in learn.cbs)
    item = get_image_files(d/'valid')[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    name = f"vl_{method.replace('+', '_')}{'_cached' if cache else ''}.pkl"
    learn.export(name)
    loaded = load_learner(d/name)
    assert set(loaded.model.state_dict()) == set(learn.model.state_dict())
    with loaded.no_bar(): torch.testing.assert_close(loaded.predict(item)[2], p)
