"""Runtime checks of kd_fastai.multistep.selfkd (CS-KD, Tf-KD) under the newest fastai/fastcore; the notebook holds the full tests."""
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
from kd_fastai.data.core import synthetic_dls
from kd_fastai.losses.logit import cskd_loss
from kd_fastai.multistep.selfkd import (CSKDCallback, VirtualTeacherCallback, class_pair_dl, is_class_pair_dl, reinit_model,
                                       TFKD_SELF, TFKD_VIRTUAL, tfkd_model, tfkd_self_loss, tfkd_virtual_loss)
from kd_fastai.test_utils import small_net


def softmax(z, T=1.): e = [math.exp(v / T) for v in z]; return [v / sum(e) for v in e]
def kl(p, q): return sum(a * math.log(a / b) for a, b in zip(p, q))



class Scale(nn.Module):
    def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(1))
    def forward(self, x): return x * self.w


def test_pairs_tensor_and_plain_loaders():
    set_seed(0)
    dls = synthetic_dls(n_train=70, bs=16, seed=0).with_class_pairs(include_self=False)
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
    data = DataLoaders(DataLoader([(u, 0), (v, 0)], bs=1, shuffle=True), DataLoader([(u, 0)], bs=1)).with_class_pairs(include_self=False)
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


def test_cskd_partner_from_the_whole_class_by_default():
    "The official sampler: the partner may be the sample itself (probability 1/n_c); include_self=False: never"
    items = [(torch.zeros(1), i // 2) for i in range(400)]  # 200 classes of 2 samples
    for kw, lo, hi in (({}, 0.4, 0.6), (dict(include_self=False), 0., 0.)):
        dl = class_pair_dl(DataLoader(items, bs=400, shuffle=True), **kw)
        idxs = dl.get_idxs()
        same = sum(i == j for i, j in zip(idxs[:400], idxs[400:])) / 400
        assert lo <= same <= hi, (kw, same)


def test_tfkd_official_tables_and_losses():
    assert TFKD_SELF['resnet18'] == dict(alpha=0.95, T=6., multiplier=50.)
    assert TFKD_VIRTUAL['resnet18'] == dict(alpha=0.1, T=20., multiplier=100.)
    assert TFKD_VIRTUAL['mobilenet_v2'] == dict(alpha=0.95, T=40., multiplier=1.)
    assert tfkd_model('torchvision:shufflenet_v2_x1_0') == 'shufflenet_v2' and tfkd_model('vgg8') is None
    # self-training: (1-alpha) CE + alpha * m * T^2 * KL / C, ResNet-18's (0.95, 6, 50)
    by_hand = 0.05 * math.log(2) + 0.95 * 50 * 36 * kl(softmax([math.log(3), 0.], 6), [.5, .5]) / 2
    got = tfkd_self_loss(torch.zeros(1, 2), torch.tensor([[math.log(3), 0.]]), torch.tensor([0]))
    assert got.item() == pytest.approx(by_hand, abs=1e-4)
    # virtual teacher: the student not softened, element-wise mean, ResNet-18's (0.1, 20, 100), a = 0.99
    by_hand = 0.9 * math.log(2) + 0.1 * 100 * kl(softmax([0.99, 0.01], 20), [.5, .5]) / 2
    assert tfkd_virtual_loss(torch.zeros(1, 2), None, torch.tensor([0])).item() == pytest.approx(by_hand, abs=1e-6)
    pd = [0.005, 0.99, 0.005]  # class 1 of 3: the student's logits (1, 0, 0) are not softened by T
    by_hand = 0.9 * -math.log(softmax([1., 0., 0.])[1]) + 0.1 * 100 * kl(softmax(pd, 20), softmax([1., 0., 0.])) / 3
    assert tfkd_virtual_loss(torch.tensor([[1., 0., 0.]]), None, torch.tensor([1])).item() == pytest.approx(by_hand, abs=1e-5)


def test_tfkd_callbacks_use_the_official_defaults(capsys):
    data = [(torch.zeros(2), 0)] * 2
    tiny = DataLoaders(DataLoader(data, bs=2), DataLoader(data, bs=2))
    losses = []
    class LossLog(Callback):
        order = 50
        def after_loss(self):
            if self.training: losses.append(self.learn.loss_grad.item())
    model = Scale(); model.name = 'torchvision:mobilenet_v2'
    learn = Learner(tiny, model, loss_func=CrossEntropyLossFlat(), cbs=[VirtualTeacherCallback(), LossLog()])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.)
    by_hand = 0.05 * math.log(2) + 0.95 * 1 * kl(softmax([0.99, 0.01], 40), [.5, .5]) / 2  # MobileNetV2's (0.95, 40, 1)
    assert losses[0] == pytest.approx(by_hand, abs=1e-6)
    assert 'alpha=0.95, T=40, multiplier=1 (the official setting of mobilenet_v2)' in capsys.readouterr().out
    teacher = nn.Linear(2, 2)
    with torch.no_grad(): teacher.weight.zero_(); teacher.bias.copy_(torch.tensor([math.log(3), 0.]))
    losses.clear()
    learn = Learner(tiny, Scale(), loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.self_distill(1, 0., teacher=teacher, fit='fit', cbs=LossLog())
    by_hand = 0.05 * math.log(2) + 0.95 * 50 * 36 * kl(softmax([math.log(3), 0.], 6), [.5, .5]) / 2  # ResNet-18's
    assert losses[0] == pytest.approx(by_hand, abs=1e-4)
    assert "no official setting for Scale: resnet18's" in capsys.readouterr().out


def test_reinit_is_pytorch_default_init():
    trained = small_net()
    with torch.no_grad():
        for p in trained.parameters(): p.add_(1.)
    torch.manual_seed(3); fresh = small_net()
    torch.manual_seed(3); reinit_model(trained)
    for k, v in fresh.state_dict().items(): assert torch.equal(trained.state_dict()[k], v), k
