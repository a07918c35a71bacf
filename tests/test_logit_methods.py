"""The logit methods (DKD, DIST, MLKD, SDD, CLKD, LS) under the newest fastai: `Learner.distill(method=...)` on a fastai
`DataBlock` of PNG files, the teacher handed back, no hook left, export -> load_learner -> predict."""
from pathlib import Path
import pytest
import torch
from torch import nn
from PIL import Image
from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, PILImageBW, get_image_files, GrandparentSplitter,
                               parent_label, Normalize, Learner, load_learner, accuracy)
from kd_fastai.all import *


def small_net(n_classes=3, width=8):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, n_classes))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('png')
    src = synthetic_dls(seed=0)
    for split, ds in (('train', src.train_ds), ('valid', src.valid_ds)):
        for i, (x, y) in enumerate(zip(ds.x, ds.y)):
            (d/split/f'class{y}').mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[0].numpy()).save(d/split/f'class{y}'/f'{i}.png')
    block = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files,
                      splitter=GrandparentSplitter(), get_y=parent_label, batch_tfms=Normalize.from_stats([0.5], [0.25]))
    dls = block.dataloaders(d, bs=16, num_workers=0)
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
    with pytest.raises(ValueError, match='available: kd, dkd, dist, mlkd, sdd, clkd'): learn.distill(teacher, 1, method='fitnet')
