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
    with pytest.raises(ValueError, match='available: kd, dkd, dist, mlkd, sdd, clkd'): learn.distill(teacher, 1, method='fitnet')
