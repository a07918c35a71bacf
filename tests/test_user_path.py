"""The fastai user's own path for RCO, RouteRecorder, BestWeights, distill_chain, CS-KD, Tf-KD (issue 10), under the
newest fastai: DataBlock loaders over tiny PNGs with aug_transforms, restore after a normal/cancelled/failed fit with
the callback attached or per fit, plain inference, export -> load_learner -> predict and get_preds twice."""
import pytest
import torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.transforms import get_image_files
from fastai.vision.augment import aug_transforms
from fastai.learner import Learner, load_learner
from fastai.metrics import accuracy
from fastai.callback.core import Callback, CancelFitException
from kd_fastai.core.fitscope import _PENDING
from kd_fastai.core.kd import KDCallback
from kd_fastai.multistep.rco import RouteRecorder, Route, RCOCallback
from kd_fastai.multistep.takd import BestWeights, distill_chain
from kd_fastai.multistep.selfkd import CSKDCallback, VirtualTeacherCallback, is_class_pair_dl
from kd_fastai.test_utils import small_net, write_png_folder, folder_dls




@pytest.fixture(scope='module')
def folder(tmp_path_factory): return write_png_folder(tmp_path_factory.mktemp('png'))


@pytest.fixture(scope='module')
def dls(folder): return folder_dls(folder, batch_tfms=aug_transforms(size=16))


@pytest.fixture(scope='module')
def route(dls, folder, tmp_path_factory):
    d = tmp_path_factory.mktemp('route')
    learn = Learner(dls, small_net(width=16), metrics=accuracy, path=folder)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2, cbs=RouteRecorder(d))
    return Route.from_folder(d)


class RaiseAt(Callback):
    def __init__(self, exc): self.exc, self.n = exc, 0
    def after_batch(self):
        self.n += self.training
        if self.n == 2: raise self.exc


def fit_every_way(make_learn, make_cb, check=lambda learn, cb: None):
    for attached in (True, False):
        for exc in (None, CancelFitException(), RuntimeError('boom')):
            cb = make_cb()
            learn = make_learn(cb if attached else None)
            model, dls = learn.model, learn.dls
            with learn.no_bar(), learn.no_logging():
                try: learn.fit(1, 1e-3, cbs=([] if exc is None else [RaiseAt(exc)]) + ([] if attached else [cb]))
                except RuntimeError as e: assert 'boom' in str(e)
            assert not cb.active and learn.model is model and learn.dls is dls and _PENDING not in learn.__dict__
            assert all(len(m._forward_hooks) == 0 for m in learn.model.modules())
            check(learn, cb)


def user_path(learn, folder, item):
    "Inference is plain on the learner carrying the callback; export -> load_learner -> predict, get_preds twice"
    plain = Learner(learn.dls, learn.model, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(), plain.no_bar():
        assert learn.validate()[0] == pytest.approx(plain.validate()[0])
        p1, p2 = learn.get_preds()[0], learn.get_preds()[0]
        assert torch.equal(p1, p2) and torch.equal(p1, plain.get_preds()[0])
        assert torch.equal(learn.predict(item)[2], plain.predict(item)[2])
        learn.lr_find(num_it=5, show_plot=False)
    learn.export('exported.pkl')
    loaded = load_learner(learn.path/'exported.pkl')
    dl = loaded.dls.test_dl(get_image_files(folder/'valid'))
    with loaded.no_bar():
        assert torch.equal(loaded.predict(item)[2], plain.predict(item)[2])
        q1, q2 = loaded.get_preds(dl=dl)[0], loaded.get_preds(dl=dl)[0]
        assert torch.equal(q1, q2)
        assert torch.allclose(q1, plain.get_preds(dl=dl)[0], atol=1e-6)
    return loaded


def test_rco(dls, folder, route):
    loads = []
    class CountingRoute(Route):
        def load(self, i): loads.append(i); return super().load(i)
    def check(learn, cb):
        t = cb.teacher.model
        assert all(m.training for m in t.modules()) and all(p.requires_grad for p in t.parameters())
    fit_every_way(lambda cb: Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=cb),
                  lambda: RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=0.), check)
    rco = RCOCallback(CountingRoute(route.files, route.epochs), arch=small_net(width=16))
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=rco)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    n = (rco.loads, len(loads))
    loaded = user_path(learn, folder, get_image_files(folder/'valid')[0])
    assert (rco.loads, len(loads)) == n  # no anchor checked or loaded by inference
    assert 'teacher' not in loaded.rco.__dict__


def test_route_recorder_writes_only_in_training(dls, folder, tmp_path):
    fit_every_way(lambda cb: Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=cb),
                  lambda: RouteRecorder(tmp_path/'ways'))
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=RouteRecorder(tmp_path/'rec'))
    user_path(learn, folder, get_image_files(folder/'valid')[0])
    assert not (tmp_path/'rec').exists()


def test_best_weights(dls, folder):
    fit_every_way(lambda cb: Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=cb), lambda: BestWeights(fname='bw'))
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=folder, cbs=BestWeights(fname='bw'))
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2)
    state = (learn.best_weights.best, learn.best_weights.best_epoch)
    mtime = (folder/'models/bw.pth').stat().st_mtime_ns
    user_path(learn, folder, get_image_files(folder/'valid')[0])
    assert (learn.best_weights.best, learn.best_weights.best_epoch) == state
    assert (folder/'models/bw.pth').stat().st_mtime_ns == mtime


def test_cskd_and_virtual_teacher(dls, folder):
    pdls = dls.with_class_pairs()
    item = get_image_files(folder/'valid')[0]
    def check(learn, cb):
        assert is_class_pair_dl(learn.dls.train) and cb.partner_out is None
        assert len({m.training for m in learn.model.modules()}) == 1
    fit_every_way(lambda cb: Learner(pdls, small_net(), metrics=accuracy, path=folder, cbs=cb), lambda: CSKDCallback(partner_bn='eval'), check)
    learn = Learner(pdls, small_net(), metrics=accuracy, path=folder, cbs=CSKDCallback())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    assert not is_class_pair_dl(user_path(learn, folder, item).dls.train)
    fit_every_way(lambda cb: Learner(dls, small_net(), metrics=accuracy, path=folder, cbs=cb), VirtualTeacherCallback)
    learn = Learner(dls, small_net(), metrics=accuracy, path=folder, cbs=VirtualTeacherCallback())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    user_path(learn, folder, item)


def test_self_distill_hands_back_trained_model_on_error(dls, folder):
    class FailInStudent(Callback):
        def after_batch(self):
            if self.training and any(isinstance(c, KDCallback) for c in self.learn.cbs): raise RuntimeError('boom')
    class Teacher(Callback):
        def after_fit(self):
            if not hasattr(self, 'w'): self.w = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
    learn, spy = Learner(dls, small_net(), metrics=accuracy, path=folder), Teacher()
    with learn.no_bar(), learn.no_logging(), pytest.raises(RuntimeError, match='boom'):
        learn.self_distill(1, 1e-2, fit='fit', cbs=[spy, FailInStudent()])
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, spy.w[k]), k
    assert learn.opt is None and [m.name for m in learn.metrics] == ['accuracy'] and _PENDING not in learn.__dict__
    with learn.no_bar(), learn.no_logging(): learn.self_distill(1, 1e-2, fit='fit')
    user_path(learn, folder, get_image_files(folder/'valid')[0])


def test_distill_chain_without_c(dls):
    y = torch.arange(48) % 3
    x = torch.randn(48, 1, 28, 28) + y[:, None, None, None].float()
    tdls = DataLoaders.from_dsets(list(zip(x[:32], y[:32])), list(zip(x[32:], y[32:])), bs=8, device='cpu')
    assert not hasattr(tdls, 'c')
    teacher = small_net(width=16)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    models, table = distill_chain([teacher, small_net(width=4)], tdls, epochs=1, loss_func=nn.CrossEntropyLoss())
    assert list(table.role) == ['teacher', 'student']
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k])
    assert all(m.training for m in teacher.modules()) and all(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match='num_classes'): distill_chain([teacher, 'model_25k_wo_dw'], tdls, loss_func=nn.CrossEntropyLoss())
    # a DataBlock loader (it has `c`) with modules only, as well
    _, t = distill_chain([small_net(width=16), small_net(width=4)], dls, epochs=1, train_teacher=True)
    assert list(t.epochs) == [1, 1]
