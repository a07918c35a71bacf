"""Runtime checks of the installed library, run by `make test` under the newest fastai/fastcore.

The notebooks hold the real tests and run under the pinned dev toolchain (nbdev 2 needs fastcore<2); this file
re-runs the main paths against the fastai that users install next to kd_fastai."""
import pytest
import torch
import fastai, fastcore
from fastai.learner import Learner, load_learner
from fastai.metrics import accuracy
from kd_fastai.all import *
from kd_fastai.experiments.runs import run_training, run_in_processes, summarize_runs, plot_curves  # not in the curated API
from kd_fastai.test_utils import small_net



def test_versions_reported():
    print(f"fastai {fastai.__version__}, fastcore {fastcore.__version__}, torch {torch.__version__}")
    assert fastai.__version__


@pytest.fixture(scope='module')
def trained_teacher():
    dls = synthetic_dls(seed=0)
    learn = Learner(dls, small_net(width=16), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    return dls, learn.model.train()


def test_distill_keeps_teacher_and_exports_student(trained_teacher, tmp_path):
    dls, teacher = trained_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    learn = Learner(dls, small_net(width=4), metrics=accuracy, path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.distill(teacher, 2, 1e-2)
    assert 'teacher_agreement' in learn.recorder.metric_names
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    learn.add_cb(KDCallback(teacher))
    learn.export('s.pkl')
    loaded = load_learner(tmp_path/'s.pkl')
    assert 'teacher' not in loaded.kd.__dict__


def test_kd_loss_value():
    s, t, y = torch.tensor([[0., 0.]]), torch.tensor([[torch.log(torch.tensor(3.)).item(), 0.]]), torch.tensor([0])
    assert abs(kd_loss(s, t, y, T=2., alpha=0.9).item() - 0.2001415) < 1e-6


def test_models_and_summary():
    m = zoo_model('model_25k_wo_dw', in_channels=1, num_classes=10)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(zoo_model('model_25k_wo_dw')) == 25298
    df = model_summary(['model_25k_wo_dw'], (1, 28, 28))
    assert df['trainable parameters'][0] == count_parameters(m)


def test_fashion_mnist_loads():
    dls = fashion_mnist_dls(bs=256, fraction=0.05, seed=0)
    xb, yb = dls.train.one_batch()
    assert xb.shape == (256, 1, 28, 28) and dls.c == 10
    assert len(dls.valid_ds) == 10000


def test_experiment_helpers(tmp_path):
    dls = synthetic_dls(seed=0)
    runs = [run_training(dls, lambda: small_net(width=4), 1, seed=s) for s in range(2)]
    table = summarize_runs(runs)
    assert table.seeds[0] == 2
    plot_curves(runs, tmp_path/'c.png')
    assert (tmp_path/'c.png').exists()


def test_runs_in_processes_and_validate_every():
    from functools import partial
    dls = synthetic_dls(seed=0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tasks = [partial(run_training, dls, lambda: small_net(width=4), 2, seed=s, valid_every=0) for s in range(2)]
        here = [t() for t in tasks]
        forked = run_in_processes(tasks, jobs=2)
    finally: torch.set_num_threads(n)
    assert [r['acc_curve'][0] for r in here] == [None, None] and all('learn' not in r for r in forked)
    for a, b in zip(here, forked): assert a['accuracy'] == pytest.approx(b['accuracy']) and a['train_loss'] == pytest.approx(b['train_loss'])


def test_forked_runs_do_not_hang_after_threaded_work(tmp_path):
    "A parent that ran torch on several threads, then forked runs: they finish (one thread each), in a child process with a timeout"
    import subprocess, sys
    script = tmp_path/'fork.py'
    script.write_text(
        "import torch\nfrom kd_fastai.experiments.runs import run_in_processes\ntorch.set_num_threads(2)\n"
        "a = torch.randn(256, 256)\nfor _ in range(10): a @ a\n"
        "def task():\n    b = torch.randn(256, 256)\n    for _ in range(10): b @ b\n    return torch.get_num_threads()\n"
        "print(run_in_processes([task] * 3, jobs=2))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == '[1, 1, 1]', r.stderr[-2000:]
