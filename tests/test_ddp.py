"""kd_fastai's callbacks under fastai's DDP (`learn.distrib_ctx`, accelerate, gloo on 2 CPU processes, loopback only):
`tests/ddp_worker.py` runs the scenarios in 2 processes; here their results are checked against one process."""
import os, socket, subprocess, sys
from pathlib import Path
import pytest
import torch
from torch import nn
from fastai.learner import Learner
from fastai.optimizer import SGD
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.core import Callback, CancelFitException
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from kd_fastai.core.kd import KDCallback
from kd_fastai.losses.logit import soft_target_loss

pytest.importorskip('accelerate')  # fastai's distrib_ctx needs it (a dev requirement)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def launch(out:Path, timeout=300):
    "Run tests/ddp_worker.py in 2 CPU processes with torchrun on the loopback interface; the ranks' results"
    port = free_port()
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port), 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join(p for p in (os.environ.get('PYTHONPATH'), str(ROOT)) if p)}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(port), str(ROOT/'tests'/'ddp_worker.py'), str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-6000:])
    return torch.load(out/'results.pt', weights_only=False)

@pytest.fixture(scope='module')
def ranks(tmp_path_factory): return launch(tmp_path_factory.mktemp('ddp'))

def same(a:dict, b:dict): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_kd_under_ddp(ranks):
    import ddp_worker as w
    r0, r1 = ranks
    assert r0['world_size'] == 2
    k0, k1 = r0['kd'], r1['kd']
    assert same(k0['final'], k1['final'])                         # the student is identical on both ranks
    for k in (k0, k1):
        assert k['first']['wrapper'] == 'DistributedDataParallel' and not k['first']['teacher_inside']  # only the student is wrapped
        assert not any(k['first']['teacher_grads'])                 # the teacher never gets a gradient (nothing to all-reduce)
        assert k['teacher_same'] and k['teacher_restored']         # bit-identical, handed back in train mode with gradients on
        assert k['model_after'] == 'Sequential'
    assert not torch.equal(k0['first']['x'], k1['first']['x'])     # each rank saw its own shard
    # one process with the same global batch (both ranks' first batches) and the same initial weights takes the same step
    torch.manual_seed(0); t = w.teacher()
    torch.manual_seed(1); s = w.student()
    x = torch.cat([k0['first']['x'], k1['first']['x']]); y = torch.cat([k0['first']['y'], k1['first']['y']])
    class StopAfterStep(Callback):
        def after_step(self): raise CancelFitException()
    learn = Learner(DataLoaders(DataLoader(list(zip(x, y)), bs=16), DataLoader(list(zip(x, y)), bs=16), device='cpu'), s, opt_func=SGD, wd=0., loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.fit(1, w.LR, cbs=[KDCallback(t, T=w.T, alpha=w.ALPHA), StopAfterStep()])
    for n, v in s.state_dict().items(): torch.testing.assert_close(v, k0['first']['w'][n], rtol=0, atol=1e-6)  # stated tolerance: 1e-6
    loss = (k0['first']['loss'] + k1['first']['loss']) / 2             # the mean of the ranks' losses = the global batch's
    t.eval()
    torch.manual_seed(1); s0 = w.student()
    with torch.no_grad(): expected = (1 - w.ALPHA) * nn.functional.cross_entropy(s0(x), y) + w.ALPHA * soft_target_loss(s0(x), t(x), y, T=w.T)
    assert abs(loss - expected.item()) < 1e-5
    # validation metrics over both ranks equal the single-process values of the final student on the whole validation set
    names = k0['names'][1:-1]
    vals = dict(zip(names, k0['values']))
    assert k0['values'] == k1['values']
    dls = w.tiny_dls()
    xv = torch.cat([b[0] for b in dls.valid]); yv = torch.cat([b[1] for b in dls.valid])
    s.load_state_dict(k0['final'])
    with torch.no_grad(): sp, tp = s(xv), t(xv)
    assert abs(vals['distill_loss'] - soft_target_loss(sp, tp, yv, T=w.T).item()) < 1e-5
    assert abs(vals['teacher_agreement'] - (sp.argmax(1) == tp.argmax(1)).float().mean().item()) < 1e-6

def test_cache_under_ddp(ranks):
    import ddp_worker as w
    c0, c1 = ranks[0]['cached'], ranks[1]['cached']
    assert c0['seen'] + c1['seen'] == 32 + 16 and c1['seen'] == 0   # filled once, by rank 0 (training + validation items)
    assert same(c0['final'], c1['final']) and c0['values'] == c1['values']
    torch.manual_seed(0); t = w.teacher().eval()
    for c in (c0, c1):  # each rank's first batch was paired with its own items' teacher outputs (fp16 cache: 1e-3)
        torch.manual_seed(1); s0 = w.student()
        x, y = c['first']['x'], c['first']['y']
        with torch.no_grad(): expected = 0.1 * nn.functional.cross_entropy(s0(x), y) + 0.9 * soft_target_loss(s0(x), t(x), y, T=4.)  # the defaults
        assert abs(c['first']['loss'] - expected.item()) < 1e-3
    for c in (c0, c1): assert 'needs path=' in c['no_path']           # without a shared folder: a clear refusal

def test_adapters_under_ddp(ranks):
    f0, f1 = ranks[0]['features'], ranks[1]['features']
    assert list(f0['adapters']) == ['0.weight']                          # an adapter was created and trained
    assert same(f0['adapters'], f1['adapters']) and same(f0['final'], f1['final'])

def test_main_job_under_ddp(ranks):
    m0, m1 = ranks[0]['main'], ranks[1]['main']
    assert m0['methods'] == m1['methods'] == ['teacher', 'baseline', 'KD (T=4, alpha=0.9)']
    assert m0['files'] == ['kd_curves.png', 'kd_results.csv', 'kd_results.md', 'kd_runs.json'] and m1['files'] == []
    assert m0['logged'] and m1['logged'] == []                          # rank 0 alone reports
    assert len(m0['teachers']) == 1                                     # one teacher file, written by rank 0

def test_logit_methods_under_ddp(ranks):
    "DKD, DIST, CLKD, MLKD (two student passes per step) and SDD (regional logits from hooks inside the DDP model) through `learn.distill`"
    import ddp_worker as w
    for m in ('dkd', 'dist', 'clkd', 'mlkd', 'sdd'):
        a, b = ranks[0][m], ranks[1][m]
        assert same(a['final'], b['final']), m                          # the student is identical on both ranks
        for r in (a, b): assert r['teacher_same'] and not r['teacher_inside'] and not r['teacher_grads'], m
    # DKD's first step equals one process stepping on the global batch (both ranks' first batches), within 1e-6
    f0, f1 = ranks[0]['dkd']['first'], ranks[1]['dkd']['first']
    torch.manual_seed(0); t = w.teacher().train()
    torch.manual_seed(1); s = w.student()
    x = torch.cat([f0['x'], f1['x']]); y = torch.cat([f0['y'], f1['y']])
    class StopAfterStep(Callback):
        def after_step(self): raise CancelFitException()
    dl = lambda: DataLoader(list(zip(x, y)), bs=16)
    learn = Learner(DataLoaders(dl(), dl(), device='cpu'), s, opt_func=SGD, wd=0., loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging(): learn.distill(t, 1, w.LR, method='dkd', fit='fit', cbs=StopAfterStep())
    for n, v in s.state_dict().items(): torch.testing.assert_close(v, f0['w'][n], rtol=0, atol=1e-6)

def test_cskd_under_ddp(ranks):
    "CS-KD's class-pair loader behind fastai's DistributedDL: every rank gets whole [B samples; B same-class partners] batches"
    c0, c1 = ranks[0]['cskd'], ranks[1]['cskd']
    assert same(c0['final'], c1['final'])
    assert len(c0['ys']) == len(c1['ys']) == 3                          # 5 pair batches, padded to 6, 3 per rank
    for y in c0['ys'] + c1['ys']: assert len(y) == 16 and torch.equal(y[:8], y[8:])
    assert torch.equal(c1['xs'][-1][:8], c0['xs'][0][:8])               # the padding repeats the first batch
    firsts = [x[:8] for x in c0['xs'] + c1['xs'][:2]]                   # the 5 distinct batches cover the 40 items
    assert len(torch.cat(firsts).flatten(1).unique(dim=0)) == 40

def test_other_callbacks_under_ddp(ranks):
    "Virtual teacher, RCO (route recorded under DDP), TAKD's distill_chain, stagewise and FitNets with find_unused_parameters"
    r0, r1 = ranks
    for k in ('virtual', 'rco', 'chain', 'stagewise', 'hint'): assert same(r0[k]['final'], r1[k]['final']), k
    assert same(r0['rco']['teacher'], r1['rco']['teacher'])             # the teacher trained under DDP with RouteRecorder
    assert r0['rco']['files'] == ['anchor_e001.pth', 'anchor_e002.pth', 'route.json'] and r0['rco']['loads'] == r1['rco']['loads'] == 2
    assert not r0['group_before_chain']                                 # distill_chain started the process group itself
    assert same(r0['chain']['middle'], r1['chain']['middle']) and r0['chain']['acc'] == r1['chain']['acc']
    for k in ('chain', 'stagewise', 'hint'): assert r0[k]['teacher_same'] and r1[k]['teacher_same'], k
    for r in (r0, r1): assert 'find_unused_parameters=True' in r['refusal']  # without it: StopAt's clear refusal
    assert r0['hint']['hint_loss'] == r1['hint']['hint_loss']

def test_crd_under_ddp(ranks):
    "CRD's memory banks and Z agree on both ranks and hold every item of the epoch, whichever rank saw it"
    c0, c1 = ranks[0]['crd'], ranks[1]['crd']
    assert same(c0['adapters'], c1['adapters']) and same(c0['final'], c1['final'])
    for bank in ('crd.bank_s', 'crd.bank_t'):
        b = c0['adapters'][bank]
        assert b.shape == (32, 128)
        torch.testing.assert_close(b.norm(dim=1), torch.ones(32))          # all 32 rows updated (a row never updated is not unit norm)
    assert (c0['adapters']['crd.z'] > 0).all()
