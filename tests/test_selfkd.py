"""Runtime checks of kd_fastai.selfkd (CS-KD, Tf-KD) under the newest fastai/fastcore; the notebook holds the full tests."""
import math
import pytest
import torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from kd_fastai.data import synthetic_dls
from kd_fastai.losses import cskd_loss
from kd_fastai.selfkd import CSKDCallback, VirtualTeacherCallback, class_pair_dl, is_class_pair_dl, reinit_model
from kd_fastai.test_utils import small_net



class Scale(nn.Module):
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(1))
    def forward(self, x): return x * self.w


def test_pairs_tensor_and_plain_loaders():
    set_seed(0)
    dls = synthetic_dls(n_train=70, bs=16, seed=0).with_class_pairs()
    assert is_class_pair_dl(dls.train) and not is_class_pair_dl(dls.valid)
    sizes = []
    for xb, yb in dls.train:
        sizes.append(len(yb))
        assert torch.equal(yb[:len(yb) // 2], yb[len(yb) // 2:])
    assert sizes == [32] * 4  # drop_last
    idxs = dls.train.class_pairs.idxs
    for k in range(0, len(idxs), 32):
        assert all(i != j for i, j in zip(idxs[k:k + 16], idxs[k + 16:k + 32]))
    items = [(torch.full((2,), float(i)), i % 3) for i in range(10)]
    dl = class_pair_dl(DataLoader(items, bs=4, shuffle=True))
    assert [len(yb) for _, yb in dl] == [8, 8, 4]


def test_cskd_fit_and_fixed_value():
    dls = synthetic_dls(seed=0)
    learn = Learner(dls.with_class_pairs(), small_net(), metrics=accuracy, cbs=CSKDCallback())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    u, v = torch.tensor([0., 0.]), torch.tensor([math.log(3), 0.])
    data = DataLoaders(DataLoader([(u, 0), (v, 0)], bs=1, shuffle=True), DataLoader([(u, 0)], bs=1)).with_class_pairs()
    losses = []
    class LossLog(Callback):
        order = 50
        def after_loss(self):
            if self.training: losses.append(self.learn.loss_grad.item())
    learn = Learner(data, Scale(), loss_func=CrossEntropyLossFlat(), cbs=[CSKDCallback(T=2., lam=0.5), LossLog()])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.)
    # batch (u | v): ln 2 + 0.5*4*KL(softmax(v/2) || softmax(u/2)); batch (v | u): the same with u and v swapped
    assert sorted(losses) == pytest.approx([0.3621866, 0.7658287], abs=1e-6)
    assert 0.7658287 == pytest.approx(cskd_loss(u[None], v[None], torch.tensor([0]), T=2., lam=0.5).item(), abs=1e-6)


def test_cskd_needs_pairs():
    learn = Learner(synthetic_dls(seed=0), small_net(), cbs=CSKDCallback())
    with learn.no_bar(), learn.no_logging(), pytest.raises(RuntimeError, match='with_class_pairs'): learn.fit(1)


def test_self_distill_and_virtual_teacher():
    dls = synthetic_dls(seed=0)
    set_seed(0)
    learn = Learner(dls, small_net(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.self_distill(1, 1e-2, teacher_epochs=1, fit='fit')
    assert 'teacher_agreement' in learn.recorder.metric_names
    assert not any(type(c).__name__ == 'KDCallback' for c in learn.cbs)
    learn = Learner(dls, small_net(), metrics=accuracy, cbs=VirtualTeacherCallback())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-2)
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    m = small_net(); w = m[0].weight.clone()
    assert not torch.equal(reinit_model(m)[0].weight, w)
