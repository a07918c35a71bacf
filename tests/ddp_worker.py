"""Run in 2 processes by tests/test_ddp.py and nbs/70_distributed.ipynb:
`torchrun --nproc_per_node 2 tests/ddp_worker.py OUT`. Each scenario trains tiny models with kd_fastai callbacks under
fastai's own `learn.distrib_ctx` (accelerate, gloo on CPU); rank 0 saves what every rank saw to OUT/results.pt."""
import sys
from pathlib import Path
import torch
from torch import nn
import torch.distributed as dist
from fastai.learner import Learner
from fastai.optimizer import SGD
from fastai.callback.core import Callback
from kd_fastai.data.core import synthetic_dls
from kd_fastai.core.kd import KDCallback, kd_metrics
from kd_fastai.cache.kd import CachedKDCallback
from kd_fastai.feature.base import FeatureDistillCallback
from kd_fastai.core.ddp import rank, world_size, unwrap_model
from kd_fastai.experiments.main import distill_experiment
from kd_fastai.core.registry import distill  # noqa: F401 (patches Learner.distill with method=)
from kd_fastai.multistep.selfkd import CSKDCallback, VirtualTeacherCallback
from kd_fastai.multistep.rco import RouteRecorder, RCOCallback
from kd_fastai.multistep.takd import distill_chain
from kd_fastai.multistep.stagewise import fit_stagewise  # noqa: F401
from kd_fastai.feature.base import fit_hint  # noqa: F401
from kd_fastai.feature.crd import CRDCallback
from accelerate import DistributedDataParallelKwargs

torch.set_num_threads(1)
LR, T, ALPHA = 0.1, 2., 0.7

def student(): return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))  # no BatchNorm: one process gives the same step
def teacher(): return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3))
def state(m): return {k: v.detach().clone() for k, v in unwrap_model(m).state_dict().items()}
def tiny_dls(): return synthetic_dls(n_train=32, n_valid=16, bs=8, seed=0, device='cpu')  # 2 ranks x 2 batches of 8, no padding

class Counting(nn.Module):
    "A teacher that counts the images it has seen"
    def __init__(self, m): super().__init__(); self.m, self.seen = m, 0
    def forward(self, x): self.seen += len(x); return self.m(x)

class FirstStep(Callback):
    "Records this rank's first training batch, its loss, the weights after the first step, and what `learn.model` is"
    order = 95
    def __init__(self, teacher): self.teacher, self.got = teacher, None
    def after_step(self):
        if self.got is not None: return
        m = self.learn.model
        self.got = dict(x=self.x.detach().cpu(), y=self.y.cpu(), loss=self.learn.loss.item(), w=state(m),
                        wrapper=type(m).__name__, teacher_inside=any(t is self.teacher for t in m.modules()),
                        teacher_grads=[p.grad is not None for p in self.teacher.parameters()])

def fit_kd(cbs, teacher_module, epochs=1, seed=1, dls=None, train=None, **ctx):
    "Fit a fresh student under `distrib_ctx` with `cbs` (or run `train(learn, cbs)`); the learner and its first step"
    torch.manual_seed(seed)
    learn = Learner(dls or tiny_dls(), student(), opt_func=SGD, wd=0., metrics=kd_metrics())
    fs = FirstStep(teacher_module)
    with learn.no_bar(), learn.distrib_ctx(cpu=True, sync_bn=False, **ctx):
        if train is None: learn.fit(epochs, LR, cbs=[*cbs, fs])
        else: train(learn, [*cbs, fs])
    return learn, fs.got

class Batches(Callback):
    "The labels of every training batch as the loader gave it (before CS-KD splits it)"
    order = -10
    def __init__(self): self.ys, self.xs = [], []
    def before_batch(self):
        if self.training: self.ys.append(self.y.cpu()); self.xs.append(self.x.cpu())

def same_teacher(t, before): return all(torch.equal(v, before[k]) for k, v in t.state_dict().items())
FIND_UNUSED = dict(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

def more_callbacks(out:Path, res:dict):
    "The other kd_fastai callbacks and training functions, each in a short fit"
    # logit methods through learn.distill(method=...): the first step of DKD is checked against one process
    for m in ('dkd', 'dist', 'clkd', 'mlkd', 'sdd'):
        torch.manual_seed(0); t = teacher().train(); before = state(t)
        learn, first = fit_kd([], t, train=lambda l, cbs: l.distill(t, 1, LR, method=m, fit='fit', cbs=cbs))
        res[m] = dict(final=state(learn.model), teacher_same=same_teacher(t, before), first=first if m == 'dkd' else None,
                      teacher_inside=first['teacher_inside'], teacher_grads=any(first['teacher_grads']))
    # CS-KD: 40 items in batches of 8 = 5 pair batches of 8 + 8, padded to 6 (the first repeated): 3 whole pair batches per rank
    b = Batches()
    learn, _ = fit_kd([CSKDCallback(), b], student(), dls=synthetic_dls(n_train=40, n_valid=16, bs=8, seed=0, device='cpu').with_class_pairs())
    res['cskd'] = dict(final=state(learn.model), ys=b.ys, xs=b.xs)
    # Tf-KD's virtual teacher
    learn, _ = fit_kd([VirtualTeacherCallback()], student())
    res['virtual'] = dict(final=state(learn.model))
    # RCO: the teacher's route recorded under DDP (rank 0 writes), then the student distils from its anchors on every rank
    torch.manual_seed(0)
    tl = Learner(tiny_dls(), teacher(), opt_func=SGD, wd=0.)
    with tl.no_bar(), tl.no_logging(), tl.distrib_ctx(cpu=True, sync_bn=False): tl.fit(2, LR, cbs=RouteRecorder(out/'route', monitor='valid_loss'))
    rco = RCOCallback(out/'route', arch=teacher, T=T, alpha=ALPHA)
    learn, _ = fit_kd([rco], rco.teacher.model, epochs=2)
    res['rco'] = dict(final=state(learn.model), teacher=state(tl.model), files=sorted(p.name for p in (out/'route').glob('*')), loads=rco.loads)
    # stagewise and FitNets: StopAt leaves later blocks without gradient, a clear refusal unless find_unused_parameters=True
    torch.manual_seed(0); t = teacher(); before = state(t)
    stage = lambda l, cbs: l.fit_stagewise(t, pairs=[('0', '0')], head='4', lrs=LR, fit='fit', cbs=cbs)
    try: fit_kd([], t, train=stage); res['refusal'] = None
    except ValueError as e: res['refusal'] = str(e)
    learn, _ = fit_kd([], t, train=stage, **FIND_UNUSED)
    res['stagewise'] = dict(final=state(learn.model), teacher_same=same_teacher(t, before))
    learn, _ = fit_kd([], t, train=lambda l, cbs: l.fit_hint(t, hint='0', guided='0', n_epoch=1, lr=LR, hint_lr=LR, fit='fit', cbs=cbs), **FIND_UNUSED)
    res['hint'] = dict(final=state(learn.model), teacher_same=same_teacher(t, before), hint_loss=learn.hint_loss)
    # CRD: its heads and memory banks are created per rank with different seeds (rank 0's are broadcast), and every bank
    # update holds both ranks' items, so after one epoch each rank's banks have all 32 rows updated (unit norm)
    torch.manual_seed(0); t = teacher()
    cb = CRDCallback(t, nce_k=4, seed=0)
    learn, _ = fit_kd([cb], t, seed=20 + rank())
    res['crd'] = dict(adapters={k: v.clone() for k, v in cb.adapters.state_dict().items()}, final=state(learn.model))

def main(out:Path):
    "Every scenario, in this process (one of 2); rank 0 saves all ranks' results to `out/results.pt`"
    res = dict(world_size=None)
    # 0. TAKD first, before any process group exists: distill_chain starts it, each stage a DDP fit by itself,
    # the best weights of each stage in rank 0's temporary folder
    torch.manual_seed(0); ct = teacher(); before = state(ct)
    res['group_before_chain'] = dist.is_initialized()
    trained, tab = distill_chain([ct, student(), student()], tiny_dls(), epochs=1, lr=LR, train_teacher=False, opt_func=SGD)
    res['chain'] = dict(final=state(trained[-1]), middle=state(trained[1]), acc=list(tab.accuracy), teacher_same=same_teacher(ct, before))
    # 1. KDCallback: the teacher stays outside DDP and unchanged; metrics over both ranks
    torch.manual_seed(0)
    t = teacher().train()
    t_before = state(t)
    learn, first = fit_kd([KDCallback(t, T=T, alpha=ALPHA)], t, epochs=2)
    res['world_size'] = world_size()
    res['kd'] = dict(first=first, final=state(learn.model), values=learn.recorder.values[-1], names=learn.recorder.metric_names,
                     teacher_same=all(torch.equal(v, t_before[k]) for k, v in t.state_dict().items()),
                     teacher_restored=t.training and all(p.requires_grad and p.grad is None for p in t.parameters()),
                     model_after=type(learn.model).__name__)
    # 2. CachedKDCallback: rank 0 fills the cache in path= once, every rank looks up its own shard's items
    torch.manual_seed(0)
    ct = Counting(teacher())
    learn, first = fit_kd([CachedKDCallback(ct, path=out/'cache', verbose=False)], ct)
    res['cached'] = dict(first=first, final=state(learn.model), seen=ct.seen, values=learn.recorder.values[-1])
    try:
        fit_kd([CachedKDCallback(ct, verbose=False)], ct)
        res['cached']['no_path'] = None
    except ValueError as e: res['cached']['no_path'] = str(e)
    # 3. FeatureDistillCallback: adapters outside the DDP model, different random init per rank, must stay identical
    torch.manual_seed(0)
    ft = teacher()
    torch.manual_seed(10 + rank())
    cb = FeatureDistillCallback(ft, pairs=[('0', '0')])  # student 4 channels -> teacher 8: a 1x1 adapter
    learn, first = fit_kd([cb], ft, seed=10 + rank())
    res['features'] = dict(adapters={k: v.clone() for k, v in cb.adapters.state_dict().items()}, final=state(learn.model))
    # 4. the main job launched in 2 processes: both train, rank 0 alone logs and writes
    logged = []
    tab = distill_experiment('model_25k_wo_dw', 'model_25k_wo_dw', epochs=1, teacher_epochs=1, seeds=1,
                             dls=synthetic_dls(n_train=32, n_valid=16, size=28, bs=8, seed=0, device='cpu'),
                             out=out/'main'/f'rank{rank()}', cache=out/'teachers', log=logged.append)
    res['main'] = dict(logged=logged, methods=list(tab.method), files=sorted(p.name for p in (out/'main'/f'rank{rank()}').glob('*')),
                       teachers=sorted(p.name for p in (out/'teachers').glob('*')))

    more_callbacks(out, res)

    gathered = [None] * world_size()
    dist.all_gather_object(gathered, res)
    if rank() == 0: torch.save(gathered, out/'results.pt')
    dist.barrier()
    dist.destroy_process_group()

if __name__ == '__main__': main(Path(sys.argv[1]))
