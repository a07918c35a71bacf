"""Runtime checks of kd_fastai.stagewise under the installed (newest) fastai: hooks, adapters, stagewise stages."""
from collections import OrderedDict
import pytest
import torch
from torch import nn
from fastai.callback.core import Callback
from fastai.learner import Learner, load_learner
from fastai.metrics import accuracy
from kd_fastai.data import synthetic_dls
from kd_fastai.stagewise import (FeatureDistillCallback, StagewiseDistiller, TrainOnly, FeatureHooks, UpTo, unwrap,
                                 find_module, feature_pairs)


def seq_net(w1, w2, n_classes=3):
    return nn.Sequential(OrderedDict(
        b1=nn.Sequential(nn.Conv2d(1, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU()),
        b2=nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.BatchNorm2d(w2), nn.ReLU()),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w2, n_classes))))


class Snap(Callback):
    order = 99
    def __init__(self): self.snaps = []
    def _state(self): return {k: v.detach().clone() for k, v in unwrap(self.learn.model).state_dict().items()}
    def before_fit(self): self._before = self._state()
    def after_fit(self): self.snaps.append((self._before, self._state()))


class Boom(Callback):
    def after_loss(self): raise RuntimeError('boom')


def changed(b, a): return sorted({k.split('.')[0] for k in b if not torch.equal(b[k], a[k])})
def n_hooks(*models): return sum(len(m._forward_hooks) for model in models for m in model.modules())


@pytest.fixture(scope='module')
def setup():
    torch.set_num_threads(1)
    dls = synthetic_dls(n_train=64, n_valid=32, seed=0)
    torch.manual_seed(0)
    teacher = seq_net(8, 12)
    tl = Learner(dls, teacher, metrics=accuracy)
    with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(2, 1e-2)
    return dls, teacher.train()


def test_stages_train_only_their_block(setup):
    dls, teacher = setup
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = Learner(dls, seq_net(4, 6), metrics=accuracy)
    snap = Snap()
    with learn.no_bar(), learn.no_logging():
        sd = learn.fit_stagewise(teacher, pairs=[('b1', 'b1'), ('b2', 'b2')], epochs_per_stage=1, lrs=1e-2, cbs=snap)
    assert [changed(b, a) for b, a in snap.snaps] == [['b1'], ['b2'], ['head']]  # incl. BatchNorm buffers
    assert all(torch.equal(v, t_state[k]) for k, v in teacher.state_dict().items())
    assert n_hooks(learn.model, teacher) == 0 and teacher.training
    assert list(sd.history.trains) == ['b1', 'b2', 'head']


def test_hooks_removed_on_exception(setup):
    dls, teacher = setup
    learn = Learner(dls, seq_net(4, 6), metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        for f in (lambda: learn.fit_stagewise(teacher, pairs=['b1', 'b2'], cbs=Boom()),
                  lambda: learn.fit_simultaneous(teacher, 1, pairs=['b1', 'b2'], cbs=Boom()),
                  lambda: learn.fit(1, cbs=[FeatureDistillCallback(teacher, ['b1']), TrainOnly(['b1']), Boom()])):
            with pytest.raises(RuntimeError, match='boom'): f()
            assert n_hooks(learn.model, teacher) == 0
            assert all(p.requires_grad for p in learn.model.parameters()) and isinstance(learn.model, nn.Sequential)


def test_adapters_train_and_are_not_exported(setup, tmp_path):
    dls, teacher = setup
    student = seq_net(4, 6)
    keys = set(student.state_dict())
    learn = Learner(dls, student, metrics=accuracy, path=tmp_path)
    cb = FeatureDistillCallback(teacher, ['b1', 'b2'])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=cb)
    assert sorted(cb.adapters) == ['b1', 'b2']
    learn.add_cb(cb); learn.export('s.pkl'); learn.remove_cb(cb)
    loaded = load_learner(tmp_path/'s.pkl')
    assert set(loaded.model.state_dict()) == keys and n_hooks(loaded.model) == 0


def test_names_and_fitnet(setup):
    dls, teacher = setup
    with pytest.raises(KeyError, match='b1'): find_module(teacher, 'b11')
    assert feature_pairs({'b1': 'b2'}, teacher, teacher) == [('b1', 'b2')]
    learn = Learner(dls, seq_net(4, 6), metrics=accuracy)
    snap = Snap()
    with learn.no_bar(), learn.no_logging(): learn.fit_hint(teacher, 'b2', 'b1', 1, 1e-2, cbs=snap)
    assert [changed(b, a) for b, a in snap.snaps] == [['b1'], ['b1', 'b2', 'head']]
