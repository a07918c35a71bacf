"""Runtime checks of kd_fastai.cache.store / kd_fastai.cache.kd under the newest fastai/fastcore (the notebooks
nbs/20_cache.store.ipynb and nbs/22_cache.kd.ipynb hold the full tests)."""
import random, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.mixup import MixUp
from fastai.metrics import accuracy
from fastai.losses import CrossEntropyLossFlat
from fastai.vision.all import (DataBlock, ImageBlock, PILImageBW, CategoryBlock, get_image_files, parent_label,
                               RandomSplitter, Resize, ResizeMethod, Normalize, aug_transforms, vision_learner)
from torchvision.models import resnet18
from kd_fastai.data.core import synthetic_dls
from kd_fastai.core.kd import KDCallback
from kd_fastai.core.teacher import FrozenTeacher
from kd_fastai.cache.store import TeacherCache, cache_nbytes, data_fingerprint, transform_fingerprint, input_signature
from kd_fastai.cache.kd import CachedKDCallback, indexed_dls
from kd_fastai.cache.views import random_reasons
import kd_fastai.core.registry  # noqa: F401 (patches Learner.distill)
from kd_fastai.test_utils import small_net



class Counting(nn.Module):
    "A teacher that counts the images it has seen"
    def __init__(self, m): super().__init__(); self.m, self.seen = m, 0
    def forward(self, x): self.seen += len(x); return self.m(x)


class CaptureTrainLosses(Callback):
    order = 90
    def before_fit(self): self.vals = []
    def after_loss(self):
        if self.training: self.vals.append(self.learn.loss.item())


def fit_losses(dls, cbs, epochs=1, model=None):
    torch.manual_seed(1)
    learn, rec = Learner(dls, model or small_net(), metrics=accuracy), CaptureTrainLosses()
    for dl in dls.loaders: dl.rng = random.Random(0)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 0., cbs=list(cbs if isinstance(cbs, list) else [cbs]) + [rec])
    return learn, rec.vals


def png_folder(d, n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(3):
        (Path(d)/f'c{c}').mkdir(parents=True, exist_ok=True)
        for i in range(n // 3):
            im = rng.integers(0, 100, (size, size), dtype=np.uint8)
            im[4*c:4*c+5, 4*c:4*c+5] += 150
            Image.fromarray(im).save(Path(d)/f'c{c}'/f'{i}.png')
    return Path(d)


def block_dls(d, size=12, batch_tfms=None, mean=0.3, std=0.3, bs=4):
    db = DataBlock(blocks=(ImageBlock(cls=PILImageBW), CategoryBlock), get_items=get_image_files, get_y=parent_label,
                   splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(size, method=ResizeMethod.Squish),
                   batch_tfms=list(batch_tfms or []) + [Normalize.from_stats(mean, std)])
    return db.dataloaders(d, bs=bs, device='cpu')


@pytest.fixture(scope='module')
def teacher():
    torch.manual_seed(0)
    return small_net(width=16)


@pytest.fixture(scope='module')
def folder(tmp_path_factory): return png_folder(tmp_path_factory.mktemp('images'))


@pytest.mark.parametrize('kind', ['synthetic', 'datablock'])
def test_cached_equals_recomputed_and_fills_once(teacher, folder, kind):
    dls = synthetic_dls(n_train=64, n_valid=24, bs=16, seed=0, device='cpu') if kind == 'synthetic' else block_dls(folder)
    _, ref = fit_losses(dls, KDCallback(teacher), epochs=2)
    counted = Counting(teacher)
    cb = CachedKDCallback(counted, verbose=False)
    _, got = fit_losses(dls, cb, epochs=2)
    assert len(got) == len(ref) and max(abs(a - b) for a, b in zip(got, ref)) < 1e-3
    assert counted.seen == len(dls.train_ds) + len(dls.valid_ds)
    assert teacher.training and 'get_idxs' not in dls.train.__dict__


def test_vision_learner_teacher_and_workers(folder):
    "a vision_learner resnet18 teacher on a DataBlock loader read by worker processes"
    dls = block_dls(folder, size=16)
    torch.manual_seed(0)
    t = vision_learner(dls, resnet18, pretrained=False, n_in=1).model
    dls.train = dls.train.new(num_workers=2)
    _, ref = fit_losses(dls, KDCallback(t))
    _, got = fit_losses(dls, CachedKDCallback(t, verbose=False))
    assert len(got) == len(ref) and max(abs(a - b) for a, b in zip(got, ref)) < 2e-3
    assert t.training


def test_fingerprint_follows_transforms_and_files(tmp_path):
    d = png_folder(tmp_path/'images')
    base = block_dls(d).train
    tf, df = transform_fingerprint(base), data_fingerprint(base)
    assert transform_fingerprint(block_dls(d, size=10).train) != tf
    assert transform_fingerprint(block_dls(d, mean=0.4).train) != tf
    base.one_batch()
    assert transform_fingerprint(base) == tf
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(base.dataset.items[0])
    assert data_fingerprint(base) != df


def test_disk_cache_restart_and_invalidation(teacher, tmp_path):
    d = png_folder(tmp_path/'images')
    c1 = CachedKDCallback(teacher, path=tmp_path/'cache', verbose=False)
    fit_losses(block_dls(d), c1)
    c2 = CachedKDCallback(teacher, path=tmp_path/'cache', verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*teacher cache')
        fit_losses(block_dls(d), c2)
    assert c2.caches['train'].fill_seconds is None
    with pytest.warns(UserWarning, match='different transforms'):
        fit_losses(block_dls(d, mean=0.4), CachedKDCallback(teacher, path=tmp_path/'cache', verbose=False))
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(block_dls(d).train_ds.items[0])
    with pytest.warns(UserWarning, match='different data'):
        fit_losses(block_dls(d, mean=0.4), CachedKDCallback(teacher, path=tmp_path/'cache', verbose=False))
    with pytest.warns(UserWarning, match='different teacher'):
        fit_losses(block_dls(d, mean=0.4), CachedKDCallback(small_net(width=16), path=tmp_path/'cache', verbose=False))


def test_refusals_and_input_check(teacher, folder):
    assert any('Flip' in w for w in random_reasons(block_dls(folder, batch_tfms=aug_transforms()).train))
    with pytest.raises(ValueError, match='random transform Flip'):
        fit_losses(block_dls(folder, batch_tfms=aug_transforms()), CachedKDCallback(teacher, verbose=False))
    with pytest.raises(ValueError, match='MixUp mixes'):
        fit_losses(block_dls(folder), [CachedKDCallback(teacher, verbose=False), MixUp()])

    class Perturb(Callback):
        def before_batch(self):
            if self.training: self.learn.xb = (self.x + 0.3 * torch.randn_like(self.x),)
    with pytest.raises(RuntimeError, match='Perturb'):
        fit_losses(block_dls(folder), [CachedKDCallback(teacher, verbose=False), Perturb()])
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_inert_outside_training_and_export(teacher, folder, tmp_path):
    dls = block_dls(folder)
    counted = Counting(teacher)
    learn = Learner(dls, small_net(), cbs=CachedKDCallback(counted, verbose=False), path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.validate(); learn.get_preds(); learn.predict(dls.valid_ds.items[0])
    assert counted.seen == 0 and learn.cached_kd.caches == {} and 'get_idxs' not in dls.train.__dict__
    learn.export('s.pkl')
    from fastai.learner import load_learner
    l2 = load_learner(tmp_path/'s.pkl')
    assert not {'teacher', 'caches'} & set(l2.cached_kd.__dict__)
    with l2.no_bar(): l2.predict(dls.valid_ds.items[0])


class Boom(Callback):
    order = 95
    def __init__(self, exc): self.exc = exc
    def after_batch(self):
        if self.training and self.iter == 1: raise self.exc


@pytest.mark.parametrize('attached', [True, False])
@pytest.mark.parametrize('exc', [None, CancelFitException, RuntimeError])
def test_restore_guarantees(teacher, folder, attached, exc):
    dls = block_dls(folder)
    trn, ab = dls.train, dls.train.after_batch
    cb = CachedKDCallback(teacher, verbose=False)
    learn = Learner(dls, small_net(), cbs=cb if attached else None)
    cbs = ([] if attached else [cb]) + ([Boom(exc('x'))] if exc else [])
    with learn.no_bar(), learn.no_logging():
        if exc is RuntimeError:
            with pytest.raises(RuntimeError): learn.fit(1, cbs=cbs)
        else: learn.fit(1, cbs=cbs)
    assert trn.after_batch is ab and 'get_idxs' not in trn.__dict__ and 'get_idxs' not in dls.valid.__dict__
    assert teacher.training and all(p.requires_grad for p in teacher.parameters()) and not cb.active


def test_storage_and_signatures(tmp_path):
    assert cache_nbytes(60000, 10) == 1_200_000
    logits, x = torch.randn(10, 5), torch.randn(10, 1, 4, 4)
    c = TeacherCache(10, n_classes=5, topk=2, path=tmp_path, sig_dim=4).fill(nn.Identity(), [((logits,), torch.arange(10))])
    assert sum(f.stat().st_size for f in tmp_path.glob('*.bin')) == c.nbytes == 10 * 2 * 3 + 10 * 4 * 4
    assert input_signature(x).shape == (10, 4)
    with pytest.warns(DeprecationWarning): assert indexed_dls('dls') == 'dls'
    m = small_net()
    ft, ref, xb = FrozenTeacher(m, dtype=torch.bfloat16), FrozenTeacher(m), torch.randn(4, 1, 8, 8)
    assert (ft(xb) - ref(xb)).abs().max() < 0.1
    ref.restore(); ft.restore()
    assert m.training


# --- fastai's applications: tabular, text, segmentation (issue 41) ---------------------------------------------------

class Peek(Callback):
    "Compares every cached teacher output with `ref(kd, learn)` (default: the live teacher on the batch the student sees)"
    order = 90
    def __init__(self, ref=None): self.ref = ref
    def before_fit(self): self.n, self.err, self.err_live = 0, 0., 0.
    def after_loss(self):
        kd = next(cb for cb in self.learn.cbs if isinstance(cb, CachedKDCallback))
        if kd.teacher_out is None or kd.keys is None: return
        p = (lambda z: z.softmax(1)) if kd.topk else (lambda z: z)  # top-k: log-probabilities, compared as probabilities
        with torch.no_grad():
            live = kd.teacher(*self.xb)
            ref = live if self.ref is None else self.ref(kd, self.learn)
        self.err = max(self.err, float((p(kd.teacher_out) - p(ref)).abs().max()))
        self.err_live = max(self.err_live, float((p(kd.teacher_out) - p(live)).abs().max()))
        self.n += 1


class Reused(Callback):
    "Records whether the cached callback of the fit reused its training cache (it was not filled)"
    order = 95
    def after_fit(self):
        kd = next(cb for cb in self.learn.cbs if isinstance(cb, CachedKDCallback))
        self.reused = kd.caches['train'].fill_seconds is None


def state(m): return {k: v.clone() for k, v in m.state_dict().items()}


def check_cached_fit(student, teacher, tmp_path, item, tol=1e-2, ref=None, **cache_kwargs):
    "A cached fit: targets equal to `ref`, the teacher unchanged; `distill(cache=True)` reuses the cache; the export predicts"
    before, pk, again = state(teacher), Peek(ref), Reused()
    cb = CachedKDCallback(teacher, path=tmp_path/'cache', verbose=False, **cache_kwargs)
    with student.no_bar(), student.no_logging(): student.fit(1, 1e-3, cbs=[cb, pk])
    assert pk.n == len(student.dls.train) + len(student.dls.valid) and pk.err < tol, (pk.n, pk.err)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    with student.no_bar(), student.no_logging():
        student.distill(teacher, 1, cache_path=tmp_path/'cache', cache_kwargs=dict(verbose=False, **cache_kwargs), cbs=again)
    assert again.reused and all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    student.path = tmp_path
    student.export('student.pkl')
    loaded = load_learner(tmp_path/'student.pkl')
    assert not any(isinstance(c, CachedKDCallback) for c in loaded.cbs)
    with loaded.no_bar(): return cb, pk, loaded.predict(item)


def tabular_data(n=160):
    import pandas as pd
    rng = np.random.default_rng(0)
    df = pd.DataFrame(dict(a=rng.choice(['x', 'y', 'z'], n), b=rng.normal(size=n), c=rng.normal(size=n)))
    df['t'] = np.where(df.b + (df.a == 'x') > 0, 'p', 'q')
    return df


def test_tabular(tmp_path):
    from fastai.tabular.all import TabularDataLoaders, tabular_learner, Categorify, Normalize as TabNormalize
    from fastcore.foundation import L
    df = tabular_data()
    dls = TabularDataLoaders.from_df(df, cat_names=['a'], cont_names=['b', 'c'], y_names='t', procs=[Categorify, TabNormalize],
                                     bs=32, valid_idx=list(range(128, 160)), device='cpu')
    torch.manual_seed(0)
    teacher, student = tabular_learner(dls, layers=[16]).model, tabular_learner(dls, layers=[4])
    assert dls.one_batch()[2].shape == (32, 1)  # targets B x 1
    dls.c = L([2])  # what some fastai versions give: the cache takes its classes from the teacher's output
    cb, _, pred = check_cached_fit(student, teacher, tmp_path, df.iloc[0])
    assert cb.caches['train'].n_classes == 2 and pred[2].shape == (2,)


def text_data(n=48):
    import pandas as pd
    rng = np.random.default_rng(0)
    words = 'good bad fine awful great poor nice the a movie film plot'.split()
    rows = [(' '.join(list(rng.choice(words, int(rng.integers(2, 30)))) + ['great' if i % 2 else 'awful']), 'pn'[i % 2])
            for i in range(n)]
    return pd.DataFrame(rows, columns=['text', 'label'])


def test_text_classifier(tmp_path):
    "AWD-LSTM on padded batches of texts of varying lengths: the cache is keyed by item, the check ignores the padding"
    from fastai.text.all import TextDataLoaders, BaseTokenizer, text_classifier_learner, AWD_LSTM, awd_lstm_clas_config
    dls = TextDataLoaders.from_df(text_data(), text_col='text', label_col='label', valid_pct=0.25, seed=0, bs=8, seq_len=8,
                                  tok_tfm=BaseTokenizer(), n_workers=0, device='cpu')
    cfg = dict(awd_lstm_clas_config, emb_sz=16, n_hid=16, n_layers=1)
    torch.manual_seed(0)
    teacher = text_classifier_learner(dls, AWD_LSTM, config=cfg, pretrained=False).model
    student = text_classifier_learner(dls, AWD_LSTM, config=cfg, pretrained=False)
    def alone(kd, learn):  # each text's teacher output without padding (what the cache stores, see nbs/21_cache.views.ipynb)
        ds = learn.dls.train_ds if learn.training else learn.dls.valid_ds
        return torch.cat([kd.teacher(ds[int(k)][0][None]) for k in kd.keys])
    cb, pk, pred = check_cached_fit(student, teacher, tmp_path, 'good film great', tol=1e-4, ref=alone)
    assert cb.caches['train'].pad_idx == 1 and pred[0] in ('p', 'n')
    assert pk.err_live < 0.2  # the live teacher on padded batches differs a little (fastai's chunked encoder)
    # a language-model loader has no items to key: refused, with the reason
    lm = TextDataLoaders.from_df(text_data(), text_col='text', is_lm=True, valid_pct=0.25, seed=0, bs=4, seq_len=8,
                                 tok_tfm=BaseTokenizer(), n_workers=0, device='cpu')
    from fastai.text.all import language_model_learner, awd_lstm_lm_config
    llm = language_model_learner(lm, AWD_LSTM, config=dict(awd_lstm_lm_config, emb_sz=16, n_hid=16, n_layers=1), pretrained=False)
    with pytest.raises(ValueError, match='language-model loader'):
        with llm.no_bar(), llm.no_logging(): llm.fit(1, cbs=CachedKDCallback(llm.model, verbose=False))


def seg_folder(d, n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    (Path(d)/'images').mkdir(parents=True); (Path(d)/'masks').mkdir()
    for i in range(n):
        im, m = rng.integers(0, 80, (size, size, 3), dtype=np.uint8), np.zeros((size, size), dtype=np.uint8)
        r, c = rng.integers(0, size - 10, 2)
        im[r:r+10, c:c+10] += 150; m[r:r+10, c:c+10] = 1 + i % 2
        Image.fromarray(im).save(Path(d)/'images'/f'{i}.png'); Image.fromarray(m).save(Path(d)/'masks'/f'{i}.png')
    return Path(d)


def tiny_encoder(pretrained=False):
    "A small CNN shaped like the bodies fastai's unet_learner cuts (stride-2 stages, then a head to cut off)"
    from fastai.layers import ConvLayer
    return nn.Sequential(ConvLayer(3, 8, stride=2), ConvLayer(8, 16, stride=2), ConvLayer(16, 32, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))


@pytest.mark.parametrize('topk', [None, 2])
def test_segmentation_dense(tmp_path, topk):
    "unet_learner: B x C x H x W teacher logits stored per item (fp16, or top-k along the class dim)"
    from fastai.vision.all import SegmentationDataLoaders, unet_learner, imagenet_stats
    d = seg_folder(tmp_path/'data')
    dls = SegmentationDataLoaders.from_label_func(d, get_image_files(d/'images'), lambda o: d/'masks'/o.name,
                                                  codes=['bg', 'a', 'b'], bs=4, valid_pct=0.25, seed=0, device='cpu',
                                                  batch_tfms=Normalize.from_stats(*imagenet_stats))
    torch.manual_seed(0)
    teacher = unet_learner(dls, tiny_encoder, pretrained=False, cut=-3).model
    student = unet_learner(dls, tiny_encoder, pretrained=False, cut=-3)
    cb, _, pred = check_cached_fit(student, teacher, tmp_path, get_image_files(d/'images')[0], topk=topk)
    c = cb.caches['train']
    assert c.item_shape == (32, 32) and c.n_classes == 3
    assert c.arrays['logits' if topk is None else 'values'].shape == (9, topk or 3, 32, 32)
    assert pred[0].shape == (32, 32)
    if topk is None:  # over memory_budget without a path: refused with the size, the teacher handed back
        with pytest.raises(ValueError, match=r'would take 9 items x 3 classes x 32 x 32 x 2 bytes.*per item'):
            with student.no_bar(), student.no_logging(): student.fit(1, cbs=CachedKDCallback(teacher, memory_budget=10_000, verbose=False))
        assert teacher.training


# --- data fingerprints on any data set, and a stale cache (issue 41) -------------------------------------------------

def quiet_fit(dls, cb, epochs=1, quiet=True):
    "A fit at learning rate 0 that fails on any warning about the teacher cache (when `quiet`)"
    import warnings as w
    learn = Learner(dls, small_net(), loss_func=CrossEntropyLossFlat(), lr=0.)
    with w.catch_warnings(), learn.no_bar(), learn.no_logging():
        if quiet: w.filterwarnings('error', message='.*teacher cache')
        learn.fit(epochs, 0., cbs=cb)


def test_tensor_dataset_cache_is_reused(teacher, tmp_path):
    from torch.utils.data import TensorDataset
    from fastai.data.core import DataLoaders
    X, Y = torch.rand(40, 1, 12, 12), torch.randint(0, 3, (40,))
    tds = lambda X: DataLoaders.from_dsets(TensorDataset(X, Y), TensorDataset(X[:8], Y[:8]), bs=8, device='cpu')
    counted = Counting(teacher)
    cb = CachedKDCallback(counted, path=tmp_path, verbose=False)
    quiet_fit(tds(X), cb); quiet_fit(tds(X), cb)
    quiet_fit(tds(X), CachedKDCallback(counted, path=tmp_path, verbose=False))
    assert counted.seen == 48  # filled once, kept across fits, reused from disk
    X2 = X.clone(); X2[5] += 0.5
    with pytest.warns(UserWarning, match='different data'):
        quiet_fit(tds(X2), CachedKDCallback(counted, path=tmp_path, verbose=False), quiet=False)


def test_stale_cache_named_and_refreshed(teacher, tmp_path):
    "fastai Datasets over indices: a changed image outside the fingerprint's sample stops the fit, naming the stale cache"
    from fastai.data.core import Datasets
    from fastai.torch_core import TensorImage, TensorCategory
    imgs, labs = torch.rand(100, 1, 12, 12), torch.randint(0, 3, (100,))
    def dls():
        return Datasets(range(100), tfms=[[lambda i: TensorImage(imgs[i])], [lambda i: TensorCategory(labs[i])]],
                        splits=[list(range(84)), list(range(84, 100))]).dataloaders(bs=12, device='cpu')
    quiet_fit(dls(), CachedKDCallback(teacher, path=tmp_path, verbose=False))
    unseen = sorted(set(range(84)) - set(np.linspace(0, 83, 64).round().astype(int).tolist()))[0]
    imgs[unseen] = 1 - imgs[unseen]
    with pytest.raises(RuntimeError, match=r'\(1\) a stale cache: this train cache was loaded from .*refresh=True'):
        quiet_fit(dls(), CachedKDCallback(teacher, path=tmp_path, verbose=False))
    quiet_fit(dls(), CachedKDCallback(teacher, path=tmp_path, verbose=False, refresh=True), epochs=2)
    quiet_fit(dls(), CachedKDCallback(teacher, path=tmp_path, verbose=False))  # the rebuilt cache is right
