"""bench/segmentation.py (issue 41): the masks, the fastai loaders, the metrics and a tiny run of the whole script
(a teacher of width 4, 1 epoch each, a hundred images) so that the benchmark cannot rot. Needs Fashion-MNIST
(`make data`)."""
import sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
sys.path.insert(0, str(Path(__file__).parents[1]/'bench'))
import segmentation as seg
from kd_fastai.data.core import FMNIST_MEAN, FMNIST_STD, find_fashion_mnist

try: find_fashion_mnist(); HAVE_DATA = True
except FileNotFoundError: HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason='Fashion-MNIST is not installed (make data)')


def test_masks_by_hand():
    x = torch.tensor([[[0, 11], [10, 255]], [[200, 0], [0, 0]]], dtype=torch.uint8)
    m = seg.seg_masks(x, torch.tensor([3, 0]), threshold=10)
    assert m.dtype == torch.uint8 and m.tolist() == [[[0, 4], [0, 4]], [[1, 0], [0, 0]]]
    bal = seg.class_balance(m)
    assert bal.shape == (11,) and np.isclose(bal.sum(), 1) and np.isclose(bal[0], 5/8) and np.isclose(bal[4], 2/8)
    padded = seg.class_balance(m, size=4)  # 12 more background pixels per image
    assert np.isclose(padded[0], (5 + 24)/32) and np.isclose(padded[1], 1/32)


def test_pixel_accuracy_by_hand():
    pred = torch.zeros(1, 3, 2, 2); pred[0, 1] = 1.; pred[0, 2, 0, 0] = 2.  # argmax: [[2,1],[1,1]]
    assert float(seg.pixel_accuracy(pred, torch.tensor([[[2, 0], [1, 1]]]))) == pytest.approx(0.75)


@needs_data
def test_data_and_loaders():
    data = seg.seg_data(n_train=200, n_test=50, holdout=0.1, threshold=10)
    tr, va, te = (set(data[k].tolist()) for k in ('train_idx', 'valid_idx', 'test_idx'))
    assert len(tr) == 180 and len(va) == 20 and len(te) == 50 and not (tr & va) and not ((tr | va) & te)
    assert torch.equal(data['masks'] > 0, data['images'] > 10) and int(data['masks'].max()) <= 10
    dls = seg.seg_dls(data, bs=16)
    xb, yb = dls.one_batch()
    assert type(yb).__name__ == 'TensorMask'
    xb, yb = torch.Tensor(xb).as_subclass(torch.Tensor), torch.Tensor(yb).as_subclass(torch.Tensor)
    assert xb.shape == (16, 1, 32, 32) and yb.shape == (16, 32, 32)
    pix = (xb * FMNIST_STD + FMNIST_MEAN) * 255  # back to 0..255: image and mask went through the same padding
    assert torch.equal(yb > 0, pix.round()[:, 0] > 10)
    assert (yb[:, :2] == 0).all() and (yb[:, :, -2:] == 0).all()  # the 2-pixel zero padding is background
    tdl = seg.test_loader(dls, data)
    assert tdl.n == 50 and tdl.one_batch()[1].shape[1:] == (32, 32)


@needs_data
def test_script_runs(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few tiny runs: one thread is faster on a busy machine
    try: _script_runs(tmp_path)
    finally: torch.set_num_threads(threads)

def _script_runs(tmp_path):
    args = ['--n-train', '120', '--n-test', '40', '--bs', '32', '--teacher-width', '4', '--teacher-epochs', '1',
            '--epochs', '1', '--student-widths', '4', '8', '--seeds', '0', '--runs', str(tmp_path/'runs'),
            '--out', str(tmp_path/'seg'), '--threads', '0']  # 0: the script leaves torch's threads alone
    support = seg.dense_support()
    ready = [m for m in ('kd', 'cwd') if support[m]]
    for m in ('kd', 'cwd'):
        if not support[m]:  # the library cannot do it yet: the script says so before any training
            with pytest.raises(RuntimeError, match='dense logits'): seg.main(args + ['--methods', m])
    df = seg.main(args + ['--methods', 'alone', *ready, '--cache-cost', '--topk', '2'])
    assert list(df.method) == ['teacher', 'alone', *ready] and list(df.seed) == [0] * (2 + len(ready))
    assert df.test_miou.between(0, 1).all() and df.test_pixel_acc.between(0, 1).all() and (df.best_epoch == 1).all()
    assert df.params[0] > df.params[1] > 0  # the teacher is the larger model
    csv, md = pd.read_csv(tmp_path/'seg.csv'), (tmp_path/'seg.md').read_text()
    assert len(csv) == len(df) and 'Command: `python bench/segmentation.py --n-train 120' in md
    assert '| student | alone | 0 |' in md and 'Class balance' in md
    assert '| float16, all 11 classes | 22,528 |' in md  # 11 x 32 x 32 x 2 bytes
    assert '| top-2 of the classes (float16 + uint8 index) | 6,144 |' in md  # 2 x 32 x 32 x (2 + 1) bytes
    assert 'cache=True)` (KD, float16 cache in memory): the fit took' in md  # the user's path worked on these loaders
    assert df.valid_teacher_agreement[2:].between(0, 1).all()  # the KD metrics of the dense runs, per pixel
    # --resume reuses the teacher checkpoint and every finished row: nothing is trained again
    again = seg.main(args + ['--methods', 'alone', *ready, '--resume'])
    assert again.drop(columns='command').equals(df.drop(columns='command'))


def test_summary_pairs_gains_by_seed():
    rows = [dict(method=m, seed=s, params=p, test_miou=v, test_pixel_acc=.9, best_epoch=1, sec_per_epoch=1.,
                 cpu_sec_per_epoch=1., run_seconds=2.)
            for m, s, p, v in [('teacher', 0, 100, .8), ('alone', 0, 10, .5), ('alone', 1, 10, .6),
                               ('kd', 0, 10, .52), ('kd', 1, 10, .59)]]
    t = seg.summary(pd.DataFrame(rows)).set_index('method')
    assert list(t.index) == ['teacher', 'alone', 'kd']
    assert t.loc['kd', 'gain in mIoU (pts)'] == '0.50 ± 2.12 (1/2 seeds up)'  # gains +2 and -1 points
    assert t.loc['alone', 'test mIoU (%)'] == '55.00 ± 7.07'
    assert t.loc['alone', 'held-out teacher agreement (%)'] == ''  # no column: no teacher, no agreement
