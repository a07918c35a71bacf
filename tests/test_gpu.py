"""Every distillation method on a CUDA device, as a fastai user trains on a GPU: a `DataBlock` of PNG files with
`aug_transforms`, `vision_learner` student and teacher, mixed precision (`to_fp16`, `to_bf16`) and channels-last
(`to_channelslast`, which adds fp16); the teacher-output cache under fp16. Each run checks that the losses are finite,
the teacher comes back bit-identical, on the device and in the memory format it had, no hook is left, and the
exported student predicts. Skipped where there is no CUDA device (CI); run on a GPU machine with
`python -m pytest -q tests/test_gpu.py`."""
import math
import pytest
import torch
from fastai.vision.all import Normalize, load_learner, accuracy, aug_transforms, vision_learner, resnet18, get_image_files
from kd_fastai.all import *
from kd_fastai.test_utils import write_png_folder, folder_dls

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

LOGIT = ['kd', 'kd+ls', 'dkd', 'dkd+ls', 'dist', 'mlkd', 'mlkd+ls', 'sdd', 'clkd']
FEATURE = ['fitnet', 'at', 'rkd', 'crd', 'crd+kd', 'ofd', 'ofd+kd', 'reviewkd']
PRECISION = {'fp16': lambda l: l.to_fp16(), 'bf16': lambda l: l.to_bf16(), 'channels_last': lambda l: l.to_channelslast()}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = write_png_folder(tmp_path_factory.mktemp('png'), n_train=16, n_valid=8, size=32)
    norm = Normalize.from_stats([0.5], [0.25])
    return d, folder_dls(d, bs=16, batch_tfms=[*aug_transforms(size=32, min_scale=0.8), norm]), folder_dls(d, bs=16, batch_tfms=norm)


def _teacher(dls, channels_last=False):
    m = vision_learner(dls, resnet18, pretrained=False, n_in=1).model.train()  # on the CPU, as a user's loaded teacher
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _distill_and_check(d, dls, method, precision, teacher_cl=False, **kw):
    teacher = _teacher(dls, teacher_cl)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    w = teacher[0][0].weight
    fmt = (w.device, w.is_contiguous(), w.is_contiguous(memory_format=torch.channels_last))
    learn = vision_learner(dls, resnet18, pretrained=False, n_in=1, metrics=accuracy, path=d)
    assert learn.dls.device.type == 'cuda'
    PRECISION[precision](learn)
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 1, 1e-3, method=method, **kw)
    assert all(math.isfinite(float(v)) for v in learn.recorder.losses), learn.recorder.losses
    assert all(math.isfinite(float(v)) for v in learn.recorder.values[-1] if v is not None), learn.recorder.values  # CRD: no valid loss
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k
    w = teacher[0][0].weight
    assert (w.device, w.is_contiguous(), w.is_contiguous(memory_format=torch.channels_last)) == fmt
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in list(learn.model.modules()) + list(teacher.modules()))
    item = get_image_files(d/'valid')[0]
    with learn.no_bar(): p = learn.predict(item)[2]
    name = f"gpu_{method.replace('+', '_')}_{precision}.pkl"
    learn.export(name)
    loaded = load_learner(d/name, cpu=False)
    assert set(loaded.model.state_dict()) == set(learn.model.state_dict())
    with loaded.no_bar(): torch.testing.assert_close(loaded.predict(item)[2].float(), p.float(), atol=2e-2, rtol=0)


@pytest.mark.parametrize('method', LOGIT + FEATURE)
def test_every_method_fp16_channels_last(folder, method):
    d, aug, _ = folder
    _distill_and_check(d, aug, method, 'channels_last')


@pytest.mark.parametrize('method', ['kd', 'dkd', 'ofd+kd', 'crd'])
def test_bf16_and_a_channels_last_teacher(folder, method):
    d, aug, _ = folder
    _distill_and_check(d, aug, method, 'bf16', teacher_cl=True)


@pytest.mark.parametrize('method', ['kd', 'dkd', 'dist', 'clkd', 'sdd'])
def test_cache_under_fp16(folder, method):
    d, _, plain = folder
    _distill_and_check(d, plain, method, 'fp16', cache=True, cache_kwargs=dict(verbose=False))
