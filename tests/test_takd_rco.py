"""Runtime checks of kd_fastai.multistep.takd and kd_fastai.multistep.rco under the installed (newest) fastai: tiny synthetic fits."""
import json
import torch
from torch import nn
import pytest
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.callback.core import Callback, CancelFitException
from kd_fastai.data.core import synthetic_dls
import math
from kd_fastai.multistep.takd import distill_chain, kldiv_mean_loss
from kd_fastai.multistep.rco import RouteRecorder, Route, RCOCallback, equal_schedule, load_anchor
from kd_fastai.test_utils import small_net



@pytest.fixture(scope='module')
def dls(): return synthetic_dls(seed=0)


@pytest.fixture(scope='module')
def route(dls, tmp_path_factory):
    folder = tmp_path_factory.mktemp('route')
    torch.manual_seed(0)
    learn = Learner(dls, small_net(width=16), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 1e-2, cbs=RouteRecorder(folder))
    return Route.from_folder(folder)


class HandOff(Callback):
    order = 55
    def __init__(self): self.stages = []
    def before_fit(self):
        kd = next((c for c in self.learn.cbs if hasattr(c, 'teacher')), None)
        self.stages.append(dict(teacher=None if kd is None else {k: v.clone() for k, v in kd.teacher.model.state_dict().items()},
                                states=[], losses=[]))
    def after_epoch(self):
        self.stages[-1]['states'].append({k: v.clone() for k, v in self.learn.model.state_dict().items()})
        self.stages[-1]['losses'].append(self.recorder.values[-1][1])


def test_chain_hands_off_best_weights(dls):
    torch.manual_seed(0)
    teacher = Learner(dls, small_net(width=16), metrics=accuracy)
    with teacher.no_bar(), teacher.no_logging(): teacher.fit_one_cycle(2, 1e-2)
    spy = HandOff()
    models, table = distill_chain([teacher.model, small_net(width=8), small_net(width=4)], dls, epochs=[2, 3], T=[2., 4.], cbs=[spy])
    assert list(table.role) == ['teacher', 'assistant 1', 'student'] and list(table.epochs) == [0, 2, 3]
    prev = spy.stages[0]
    best = min(range(len(prev['losses'])), key=prev['losses'].__getitem__)
    for k, v in spy.stages[1]['teacher'].items(): assert torch.equal(v, prev['states'][best][k])
    for k, v in models[1].state_dict().items(): assert torch.equal(v, prev['states'][best][k])
    with pytest.raises(ValueError, match='distillation stage'): distill_chain([teacher.model, small_net()], dls, epochs=[1, 2])


def test_rco_equal_and_resume(dls, route):
    assert route.epochs == [1, 2, 3]
    learn = Learner(dls, small_net(width=4), metrics=accuracy)
    cb = RCOCallback(route, arch=small_net(width=16))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5, 1e-2, cbs=cb)
    assert [h['anchor'] for h in cb.history] == equal_schedule(5, 3)
    cb2 = RCOCallback(route, arch=small_net(width=16))
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5, 1e-2, cbs=cb2, start_epoch=3)
    assert [(h['epoch'], h['anchor']) for h in cb2.history] == [(3, 1), (4, 2)]  # equal_schedule(5, 3)[3:]
    for k, v in load_anchor(route.files[2]).items(): assert torch.equal(cb2.teacher.model.state_dict()[k], v)


class StopAfter(Callback):
    order = 100
    def after_epoch(self):
        if self.epoch == 0: raise CancelFitException()


def test_rco_greedy_resume_from_state_file(dls, route, tmp_path):
    learn = Learner(dls, small_net(width=4), metrics=accuracy)
    state = tmp_path/'state.json'
    one_step = dict(criterion='agreement', lookahead=False)  # the library's earlier rule, kept as an option
    cb = RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=0., state_file=state, **one_step)
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2, cbs=[cb, StopAfter()])
    assert [h['anchor'] for h in json.loads(state.read_text())['history']] == [0]
    cb2 = RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=0., state_file=state, **one_step)
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2, cbs=cb2, start_epoch=1)
    assert [h['anchor'] for h in cb2.history] == [0, 1, 2, 2]
    cb3 = RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=1.01, **one_step)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-2, cbs=cb3)
    assert [h['anchor'] for h in cb3.history] == [0, 0, 2]  # a greedy run always ends on the final anchor
    # the paper's search (the default) resumes from its state file too
    state2 = tmp_path/'state2.json'
    cb4 = RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=1e9, state_file=state2)
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2, cbs=[cb4, StopAfter()])
    cb5 = RCOCallback(route, arch=small_net(width=16), schedule='greedy', threshold=1e9, state_file=state2)
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-2, cbs=cb5, start_epoch=1)
    assert [h['anchor'] for h in cb5.history] == [0, 2, 2, 2]


def _linear(scale=1., seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 3))
    with torch.no_grad(): m[1].weight.mul_(scale)
    return m


@pytest.mark.parametrize('followable, expected', [(True, [0, 2, 2, 3]), (False, [0, 0, 0, 3])])
def test_rco_greedy_search_ahead(dls, tmp_path, followable, expected):
    "The student (a copy of anchor 2, trained at lr 0) can follow anchor 2 of 0..3 at once: the search skips to it; else it stays"
    student = _linear(seed=12)
    anchors = [_linear(30., 10), _linear(30., 11), student if followable else _linear(30., 14), _linear(30., 13)]
    files = [tmp_path/f'a{i}.pth' for i in range(4)]
    for m, f in zip(anchors, files): torch.save(m.state_dict(), f)
    learn = Learner(dls, student, metrics=accuracy)
    cb = RCOCallback(files, arch=_linear(), schedule='greedy', probe=dls.train)
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 0., cbs=cb)
    assert [h['anchor'] for h in cb.history] == expected
    assert cb.history[0]['candidates'] == [1, 2, 3] and (cb.history[0]['scores'][1] < 1e-6) == followable
    cb = RCOCallback(files, arch=_linear(), schedule='greedy', threshold=-1.)  # never passes: still ends on the final anchor
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 0., cbs=cb)
    assert [h['anchor'] for h in cb.history] == [0, 0, 3]
    with pytest.raises(ValueError, match='final anchor'): RCOCallback(files, arch=_linear(), schedule='greedy', final_epochs=0)


def test_rco_errors_before_training(dls, route, tmp_path):
    files = [tmp_path/f'a{i}.pth' for i in range(2)]
    for f in files: torch.save(small_net(width=16).state_dict(), f)
    files[1].write_bytes(b'garbage')
    learn = Learner(dls, small_net(width=4))
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match='a1.pth'):
        learn.fit(1, cbs=RCOCallback(files, arch=small_net(width=16)))
    with pytest.raises(FileNotFoundError, match='missing.pth'): RCOCallback([files[0], tmp_path/'missing.pth'], arch=small_net(width=16))
    for f in files: torch.save(small_net(n_classes=5, width=16).state_dict(), f)
    with learn.no_bar(), learn.no_logging(), pytest.raises(ValueError, match='predicts 5 classes'):
        learn.fit(1, cbs=RCOCallback(files, arch=small_net(n_classes=5, width=16)))


def test_chain_on_plain_loaders_without_c():
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    y = torch.arange(32) % 3
    items = list(zip(torch.randn(32, 1, 8, 8) + y[:, None, None, None].float(), y))
    dls = DataLoaders(DataLoader(items[:24], bs=8, shuffle=True), DataLoader(items[24:], bs=8), device='cpu')
    assert not hasattr(dls, 'c')
    teacher = small_net(width=16).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    models, table = distill_chain([teacher, small_net(width=4)], dls, epochs=1, loss_func=nn.CrossEntropyLoss())
    assert list(table.epochs) == [0, 1]
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k])
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match='num_classes'): distill_chain([teacher, 'model_25k_wo_dw'], dls, loss_func=nn.CrossEntropyLoss())


@pytest.mark.parametrize('schedule', ['equal', 'greedy'])
def test_rco_inert_in_inference(dls, route, tmp_path, schedule):
    cb = RCOCallback(route, arch=small_net(width=16), schedule=schedule)
    learn = Learner(dls, small_net(width=4), metrics=accuracy, cbs=cb, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.validate(); learn.get_preds(); learn.get_preds()
        learn.lr_find(num_it=5, show_plot=False)
    assert cb.loads == 0 and cb.anchor is None and not cb.active


def test_rco_distils_from_the_current_anchor(dls, route):
    from kd_fastai.losses.logit import kd_loss
    class Cap(Callback):
        order = RCOCallback.order + 1
        def after_loss(self):
            if self.training and not hasattr(self, 'got'):
                self.got = (self.pred.detach(), self.yb[0], self.learn.loss_grad.detach().clone(), self.xb[0], self.learn.rco.anchor)
    cap, learn = Cap(), Learner(dls, small_net(width=4))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=[RCOCallback(route, arch=small_net(width=16), T=3., alpha=0.7), cap])
    pred, y, lg, x, a = cap.got
    t = small_net(width=16); t.load_state_dict(load_anchor(route.files[a])); t.eval()
    with torch.no_grad(): expected = kd_loss(pred, t(x), y, T=3., alpha=0.7)
    assert torch.allclose(lg, expected, atol=1e-5)  # the KD loss against the anchor, not the plain task loss


def test_takd_kd_term_is_the_official_elementwise_mean(dls, capsys):
    "nn.KLDivLoss()'s default: T^2 * KL / (B*C); the chain uses it by default"
    sm = lambda z, T: [math.exp(v / T) / sum(math.exp(u / T) for u in z) for v in z]
    p, q = sm([math.log(3), 0., 1.], 2.), sm([0., 0., 0.], 2.)
    by_hand = 4 * sum(a * math.log(a / b) for a, b in zip(p, q)) / 3
    assert kldiv_mean_loss(torch.zeros(1, 3), torch.tensor([[math.log(3), 0., 1.]]), T=2.).item() == pytest.approx(by_hand, abs=1e-6)
    import inspect
    sig = inspect.signature(distill_chain).parameters
    assert (sig['T'].default, sig['alpha'].default, sig['reduction'].default) == (4.0, 0.9, 'mean')
    class Spy(Callback):
        order = 55
        def after_loss(self):
            if self.training and not hasattr(self, 'got'):
                kd = next(c for c in self.learn.cbs if hasattr(c, 'teacher'))
                self.got = (self.pred.detach(), kd.teacher_out, self.yb[0], self.learn.loss_grad.item())
    spy = Spy()
    distill_chain([small_net(width=8), small_net(width=4)], dls, epochs=1, cbs=[spy])
    pred, t, y, loss = spy.got
    expected = 0.1 * torch.nn.functional.cross_entropy(pred, y) + 0.9 * kldiv_mean_loss(pred, t, T=4.)
    assert loss == pytest.approx(expected.item(), abs=1e-5)
    assert 'KD term mean' in capsys.readouterr().out
    with pytest.raises(ValueError, match="'batchmean'"): distill_chain([small_net(width=8), small_net(width=4)], dls, reduction='sum')
