"""Runtime checks of kd_fastai.feature.base / kd_fastai.multistep.stagewise under the installed (newest) fastai: a fastai DataBlock over
PNG files, vision_learner ResNets as student and teacher, zoo models and plain nn.Sequential; everything a fit changes
is handed back (normal end, CancelFitException, an exception mid-epoch; callback attached or per-fit)."""
from collections import OrderedDict
import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image
from torchvision.models import resnet18
from fastai.callback.core import Callback, CancelFitException
from fastai.data.block import DataBlock, CategoryBlock
from fastai.data.transforms import get_image_files, GrandparentSplitter, parent_label
from fastai.learner import Learner, load_learner
from fastai.metrics import accuracy
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fastai.vision.augment import Resize
from fastai.vision.learner import vision_learner
from kd_fastai.data.core import synthetic_dls
from kd_fastai.models.zoo import zoo_model
from kd_fastai.feature.base import FeatureDistillCallback, StopAt, find_module, feature_pairs
from kd_fastai.multistep.stagewise import StagewiseDistiller, TrainOnly


# ---------- helpers
def n_hooks(*models):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for model in models for m in model.modules())

def state(model): return {k: v.detach().clone() for k, v in model.state_dict().items()}
def same_state(model, s): return set(s) == set(model.state_dict()) and all(torch.equal(v, s[k]) for k, v in model.state_dict().items())
def flags(model): return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]
def groups(learn): return [[id(p) for p in pl] for pl in learn.opt.param_lists]


class Boom(Callback):
    "Raises `exc` after the second training batch"
    def __init__(self, exc): self.exc = exc
    def before_fit(self): self.n = 0
    def after_batch(self):
        if not self.training: return
        self.n += 1
        if self.n == 2: raise self.exc


class HookCount(Callback):
    "The number of hooks on the model while it predicts"
    def after_pred(self): self.seen = n_hooks(self.learn.model)


class Snap(Callback):
    order = 99
    def __init__(self): self.snaps = []
    def before_fit(self): self._before = state(self.learn.model)
    def after_fit(self): self.snaps.append((self._before, state(self.learn.model)))


def changed(b, a): return sorted({k.rsplit('.', 2)[0] if k.startswith('0.') else k.split('.')[0]
                                  for k in b if not torch.equal(b[k], a[k])})


# ---------- a user's own data: PNG files in train/valid class folders, a DataBlock, vision_learner ResNets
@pytest.fixture(scope='module')
def image_dls(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    for split, n in (('train', 16), ('valid', 8)):
        for c in ('a', 'b'):
            (root/split/c).mkdir(parents=True)
            for i in range(n // 2):
                x = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8); x[..., 'ab'.index(c)] += 150
                Image.fromarray(x).save(root/split/c/f'{i}.png')
    db = DataBlock(blocks=(ImageBlock(cls=PILImage), CategoryBlock), get_items=get_image_files,
                   splitter=GrandparentSplitter(), get_y=parent_label, item_tfms=Resize(32))
    return db.dataloaders(root, bs=8, num_workers=0), root


@pytest.fixture
def vl(image_dls, tmp_path):
    "A vision_learner resnet18 student with its optimizer, and a resnet18 teacher model in train mode (as users hold it)"
    dls, _ = image_dls
    torch.manual_seed(0)
    teacher = vision_learner(dls, resnet18, pretrained=False).model.train()
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy, path=tmp_path)
    learn.create_opt()
    return learn, teacher


def check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags):
    assert learn.model is model and 'forward' not in model.__dict__ and learn.loss_func is loss_func
    assert n_hooks(model, teacher) == 0
    assert same_state(teacher, t_state) and flags(teacher) == t_flags
    assert groups(learn) == opt_groups and len(learn.opt.hypers) == len(opt_groups)
    assert len(learn.splitter(learn.model)) == 3  # fastai's resnet splitter indexes model[0], model[1]
    learn.freeze()
    assert not model[0][0].weight.requires_grad and model[1][-1].weight.requires_grad
    learn.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


def test_vision_learner_hint_simultaneous_stagewise(vl):
    learn, teacher = vl
    model, loss_func, opt_groups = learn.model, learn.loss_func, groups(learn)
    t_state, t_flags = state(teacher), flags(teacher)
    snap = Snap()
    with learn.no_bar(), learn.no_logging():
        learn.fit_hint(teacher, '0.4', '0.4', 1, 1e-3, hint_epochs=1, hint_lr=1e-3, cbs=snap)  # layer1 -> layer1
        assert len(learn.hint_loss) == 1
        check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags)
        # stage 1 of FitNets trains only up to layer1 (the stem and layer1): nothing after it changed
        b, a = snap.snaps[0]
        moved = {k for k in b if not torch.equal(b[k], a[k])}
        assert moved and all(k.startswith(('0.0.', '0.1.', '0.4.')) for k in moved), moved

        learn.fit_simultaneous(teacher, 1, 1e-3, pairs=[('0.4', '0.4'), ('0.5', '0.4')])  # 128 -> 64 channels: adapter + pool
        assert 'feature_loss' in learn.recorder.metric_names and len(learn.metrics) == 1
        check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags)

        sd = StagewiseDistiller(learn, teacher, pairs=[('0.4', '0.4')], head='1')
        snap = Snap()
        sd.fit_block(0, 1, 1e-3, cbs=snap)
        check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags)
        b, a = snap.snaps[0]
        assert {k for k in b if not torch.equal(b[k], a[k])} <= {k for k in b if k.startswith('0.4.')}  # incl. BN stats
        sd.fit_head(1, 1e-3, cbs=snap)
        check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags)
        b, a = snap.snaps[1]
        assert all(k.startswith('1.') for k in b if not torch.equal(b[k], a[k]))
    assert list(sd.history.trains) == ['0.4', '1']


def test_vision_learner_teacher_as_learner_and_zoo_teacher(image_dls):
    dls, _ = image_dls
    tl = vision_learner(dls, resnet18, pretrained=False)
    student = zoo_model('resnet10', in_channels=3, num_classes=2, width=4)
    learn = Learner(dls, student, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fit_simultaneous(tl, 1, 1e-3, pairs=[('layer1', '0.4'), ('layer2', '0.5')])  # a Learner as teacher
    assert n_hooks(student, tl.model) == 0


@pytest.mark.parametrize('exc', [RuntimeError('boom'), CancelFitException()], ids=['error', 'cancel'])
@pytest.mark.parametrize('attached', [True, False], ids=['attached', 'per_fit'])
def test_restore_after_exception(vl, exc, attached):
    learn, teacher = vl
    model, loss_func, opt_groups = learn.model, learn.loss_func, groups(learn)
    t_state, t_flags = state(teacher), flags(teacher)
    cbs = [FeatureDistillCallback(teacher, [('0.5', '0.4')], task_weight=0.), StopAt('0.5'), TrainOnly(['0.5'])]
    if attached: learn.add_cbs(cbs)
    spy = HookCount()
    with learn.no_bar(), learn.no_logging():
        fit = lambda: learn.fit(1, 1e-3, cbs=[Boom(exc), spy] + ([] if attached else cbs))
        if isinstance(exc, RuntimeError):
            with pytest.raises(RuntimeError, match='boom'): fit()
        else: fit()
    assert spy.seen > 0  # the hooks were there during training
    check_handed_back(learn, model, loss_func, opt_groups, teacher, t_state, t_flags)
    assert all(m.training == model.training for m in model.modules())
    if attached:  # inference with the callbacks attached: plain, no hook
        for f in (lambda: learn.get_preds(cbs=spy), lambda: learn.validate(cbs=spy)):
            spy.seen = None; f(); assert spy.seen == 0
        learn.remove_cbs(cbs)


def test_errors_before_training(vl):
    learn, teacher = vl
    before = state(learn.model)
    with pytest.raises(KeyError, match=r"no submodule 'layer1'.*Available names.*0\.4"):
        find_module(learn.model, 'layer1', 'student')
    with learn.no_bar(), learn.no_logging():
        with pytest.raises(KeyError, match='Available names'):
            learn.fit(1, cbs=FeatureDistillCallback(teacher, [('0.9', '0.4')]))
        for cb in (FeatureDistillCallback(teacher, [('0.5', '0.4')], resize='error'),  # 4x4 vs 8x8 maps
                   FeatureDistillCallback(teacher, [('0.5', '0.4')], adapt='never')):  # 128 vs 64 channels
            with pytest.raises(ValueError, match=r"student's '0.5' features .* cannot be compared with the teacher's '0.4'"):
                learn.fit(1, 1e-2, cbs=cb)
    assert same_state(learn.model, before)  # nothing trained, no BatchNorm statistic moved
    assert n_hooks(learn.model, teacher) == 0


def test_export_and_predict(vl, image_dls):
    learn, teacher = vl
    _, root = image_dls
    cb = FeatureDistillCallback(teacher, [('0.4', '0.4'), ('0.5', '0.4')])
    class FreezeSpy(Callback):
        "During each training fit: are the adapters trainable, is the body frozen, how many groups"
        def __init__(self): self.seen = []
        def after_step(self):
            self.seen.append((all(p.requires_grad for p in cb.adapters.parameters()), model[0][0].weight.requires_grad,
                              len(self.learn.opt.param_lists)))
    model, spy = learn.model, FreezeSpy()
    learn.add_cbs([cb, spy])
    # fine_tune: freeze() + fit_one_cycle(slice) (per-group lr arrays), then unfreeze() + fit_one_cycle
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, freeze_epochs=1)
    learn.remove_cb(spy)
    assert sorted(cb.adapters) == ['0__5']
    assert set(spy.seen) == {(True, False, 3), (True, True, 3)}  # adapters always train; the body frozen, then not
    assert groups(learn) == [[id(p) for p in pl] for pl in learn.splitter(model)]
    keys = set(learn.model.state_dict())
    img = sorted((root/'valid'/'a').glob('*.png'))[0]
    spy = HookCount()
    learn.add_cb(spy)
    pred = learn.predict(img)
    assert spy.seen == 0
    learn.remove_cb(spy)
    learn.export('s.pkl')
    loaded = load_learner(learn.path/'s.pkl')
    assert set(loaded.model.state_dict()) == keys and n_hooks(loaded.model) == 0
    lcb = loaded.feature_distill
    assert 'teacher' not in lcb.__dict__ and 'adapters' not in lcb.__dict__
    lpred = loaded.predict(img)
    assert lpred[0] == pred[0] and torch.allclose(lpred[2], pred[2], atol=1e-5)
    loaded.get_preds(dl=loaded.dls.test_dl([img]))
    with pytest.raises(RuntimeError, match='no teacher'):  # training a loaded learner with the teacher-less callback
        with loaded.no_bar(), loaded.no_logging(): loaded.fit(1)


# ---------- plain nn.Sequential and zoo models on the library's synthetic loaders
def seq_net(w1, w2, n_classes=3):
    return nn.Sequential(OrderedDict(
        b1=nn.Sequential(nn.Conv2d(1, w1, 3, padding=1), nn.BatchNorm2d(w1), nn.ReLU()),
        b2=nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.BatchNorm2d(w2), nn.ReLU()),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w2, n_classes))))


@pytest.fixture(scope='module')
def seq_setup():
    torch.set_num_threads(1)
    dls = synthetic_dls(n_train=64, n_valid=32, seed=0)
    torch.manual_seed(0)
    teacher = seq_net(8, 12)
    tl = Learner(dls, teacher, metrics=accuracy)
    with tl.no_bar(), tl.no_logging(): tl.fit_one_cycle(2, 1e-2)
    return dls, teacher.train()


def test_sequential_stages_train_only_their_block(seq_setup):
    dls, teacher = seq_setup
    t_state = state(teacher)
    learn = Learner(dls, seq_net(4, 6), metrics=accuracy)
    snap = Snap()
    with learn.no_bar(), learn.no_logging():
        sd = learn.fit_stagewise(teacher, pairs=[('b1', 'b1'), ('b2', 'b2')], epochs_per_stage=1, lrs=1e-2, cbs=snap)
    assert [changed(b, a) for b, a in snap.snaps] == [['b1'], ['b2'], ['head']]  # incl. BatchNorm buffers
    assert same_state(teacher, t_state) and n_hooks(learn.model, teacher) == 0 and teacher.training
    assert list(sd.history.trains) == ['b1', 'b2', 'head']


def test_sequential_conveniences_restore_on_exception(seq_setup):
    dls, teacher = seq_setup
    learn = Learner(dls, seq_net(4, 6), metrics=accuracy)
    model, loss_func = learn.model, learn.loss_func
    with learn.no_bar(), learn.no_logging():
        for f in (lambda: learn.fit_stagewise(teacher, pairs=['b1', 'b2'], cbs=Boom(RuntimeError('boom'))),
                  lambda: learn.fit_simultaneous(teacher, 1, pairs=['b1', 'b2'], cbs=Boom(RuntimeError('boom'))),
                  lambda: learn.fit_hint(teacher, 'b2', 'b1', 1, cbs=Boom(RuntimeError('boom')))):
            with pytest.raises(RuntimeError, match='boom'): f()
            assert n_hooks(learn.model, teacher) == 0 and learn.model is model and learn.loss_func is loss_func
            assert all(p.requires_grad for p in learn.model.parameters()) and len(learn.metrics) == 1
            assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_zoo_models_and_names(seq_setup):
    dls, teacher = seq_setup
    with pytest.raises(KeyError, match='b1'): find_module(teacher, 'b11')
    assert feature_pairs({'b1': 'b2'}, teacher, teacher) == [('b1', 'b2')]
    dls = synthetic_dls(n_train=32, n_valid=16, size=8, seed=0)
    t = zoo_model('resnet14', in_channels=1, num_classes=3, width=4)
    learn = Learner(dls, zoo_model('resnet10', in_channels=1, num_classes=3, width=2), metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        sd = learn.fit_stagewise(t, pairs=['stem', 'layer1'], epochs_per_stage=1, lrs=1e-2)
    assert list(sd.history.trains) == ['stem', 'layer1', 'head'] and n_hooks(learn.model, t) == 0
