"""The feature methods (FitNet, AT, OFD, ReviewKD, '+kd') under the newest fastai: `Learner.distill(method=...)` on a
fastai `DataBlock` of PNG files with `aug_transforms`, zoo and `vision_learner` models, and from the teacher-output
cache; the teacher handed back (OFD's BatchNorm statistics included), no hook left, connectors not exported,
export -> load_learner -> predict."""
import pytest
import torch
from fastai.vision.all import Normalize, Learner, load_learner, accuracy, aug_transforms, vision_learner, resnet18, get_image_files
from kd_fastai.all import *
from fastai.callback.core import Callback
from kd_fastai.test_utils import write_png_folder, folder_dls


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = write_png_folder(tmp_path_factory.mktemp('png'), n_train=8, n_valid=4, size=16)
    return d, folder_dls(d, bs=8, batch_tfms=[*aug_transforms(size=16, min_scale=0.8), Normalize.from_stats([0.5], [0.25])])


def _check(learn, teacher, before, d, name):
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in list(learn.model.modules()) + list(teacher.modules()))
    assert 'feature_loss' in learn.recorder.metric_names
    item = get_image_files(d/'valid')[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    learn.export(f'{name}.pkl')
    loaded = load_learner(d/f'{name}.pkl')
    assert set(loaded.model.state_dict()) == set(learn.model.state_dict())
    with loaded.no_bar(): torch.testing.assert_close(loaded.predict(item)[2], p)


@pytest.mark.parametrize('method', ['fitnet', 'at', 'ofd', 'reviewkd', 'ofd+kd', 'fitnet+kd'])
def test_feature_method_zoo(folder, method):
    d, dls = folder
    teacher = zoo_model('cifar_resnet14', in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = Learner(dls, zoo_model('cifar_resnet8', in_channels=1, num_classes=3), metrics=accuracy, path=d)
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-2, method=method)
    assert ('distill_loss' in learn.recorder.metric_names) == method.endswith('+kd')
    _check(learn, teacher, before, d, method)


@pytest.mark.parametrize('method', ['ofd', 'reviewkd'])
def test_feature_method_vision_learner(folder, method):
    d, dls = folder
    teacher = vision_learner(dls, resnet18, pretrained=False, n_in=1).model.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, path=d)
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-3, method=method)
    _check(learn, teacher, before, d, f'vl_{method}')


@pytest.mark.parametrize('method', ['ofd+kd', 'reviewkd'])
def test_efficientnet_student_pairs_by_resolution(folder, method):
    "Seed 004's EfficientNet-B0 student (7 stages) from a 3-stage teacher: each teacher stage meets the student's last stage of its size"
    d, dls = folder
    teacher = zoo_model('cifar_resnet14', in_channels=1, num_classes=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = Learner(dls, zoo_model('efficientnet_b0', in_channels=1, num_classes=3), metrics=accuracy, path=d)
    grab = GrabCallback()
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-3, method=method, cbs=grab)
    assert grab.pairs == [('layer1', 'layer1'), ('layer2', 'layer2'), ('layer3', 'layer3')]  # 16x16, 8x8, 4x4 (size 16 input)
    _check(learn, teacher, before, d, f'eff_{method.replace("+", "_")}')


class GrabCallback(Callback):
    "The feature method's pairs, read during the fit"
    order = 100
    def before_train(self):
        cb = next(c for c in self.learn.cbs if hasattr(c, 'pairs') and hasattr(c, 'adapters'))
        self.pairs = [tuple(p) for p in cb.pairs]


class TeacherCalls(Callback):
    "Count the teacher's forward passes during training and validation batches after the first (the dry run's)"
    order = 100
    def __init__(self, teacher): self.teacher, self.calls, self.h = teacher, 0, None
    def after_batch(self):
        if self.h is None: self.h = self.teacher.register_forward_pre_hook(lambda *a: setattr(self, 'calls', self.calls + 1))
    def after_fit(self): self.h.remove()


@pytest.mark.parametrize('method,views', [('fitnet+kd', None), ('reviewkd', 2)])
def test_feature_method_from_cache(folder, method, views):
    "The teacher's features from the teacher-output cache (a deterministic DataBlock, or a replayable crop + flip with views=2): no teacher pass after the fill"
    d, _ = folder
    tfms, ckw = ([RandomCropFlip(pad=2)], dict(views=views)) if views else ([], {})
    dls = folder_dls(d, bs=8, batch_tfms=[*tfms, Normalize.from_stats([0.5], [0.25])])
    teacher = vision_learner(dls, resnet18, pretrained=False, n_in=1).model.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, path=d)
    calls = TeacherCalls(teacher)
    with learn.no_bar(), learn.no_logging():
        learn.distill(teacher, 1, 1e-3, method=method, cache=True, cache_kwargs=dict(verbose=False, **ckw), cbs=calls)
    assert calls.calls == 0
    assert all(torch.isfinite(torch.tensor(v)).all() for v in learn.recorder.values[-1])
    _check(learn, teacher, before, d, f'cached_{method.replace("+", "_")}')
