"""Cost of the feature methods (issue 12): seconds per training epoch of FitNet, AT, RKD, CRD, OFD and ReviewKD against
a plain student epoch plus one teacher forward pass over the same batches, in one run (interleaved repeats, median).

    python bench/feature_cost.py --fraction 0.1 --repeats 2 --threads 1

Target: every method's epoch <= 1.30 x (plain epoch + teacher forward). The teacher is untrained: the cost does not
depend on the weights. CRD runs with its official K = 16,384 negatives unless `--nce-k` says otherwise. FitNet, AT and
ReviewKD are also timed with the teacher's features from the teacher-output cache (`cache=True`), filled once before
the timed epochs (its fill time and size reported)."""
import argparse, platform, statistics, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
import torch
import pandas as pd
from fastai.torch_core import set_seed
from kd_fastai.data.core import fashion_mnist_dls
from kd_fastai.models.zoo import zoo_model, count_parameters
from kd_fastai.core.registry import method_callback
from kd_fastai.experiments.runs import to_markdown
from kd_fastai.losses.logit import crd_bank_bytes
sys.path.insert(0, str(Path(__file__).parent))
from logit_cost import epoch_time  # one training epoch of a fresh student, with or without a callback

METHODS = ('fitnet', 'at', 'rkd', 'crd', 'ofd', 'reviewkd')
CACHED = ('fitnet', 'at', 'reviewkd')  # the feature methods the teacher-output cache can serve


def teacher_time(dls, teacher):
    "One pass of the teacher over the training batches, eval mode, no gradient"
    teacher.eval(); t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in dls.train: teacher(x)
    return time.perf_counter() - t0


def main(teacher='cifar_resnet56', student='cifar_resnet20', fraction=0.05, bs=128, repeats=2, threads=1, nce_k=None,
         out='results/feature_cost'):
    if threads: torch.set_num_threads(threads)
    dls = fashion_mnist_dls(bs=bs, fraction=fraction, seed=0, val_bs=512)
    set_seed(1)
    t_model = zoo_model(teacher, in_channels=1)
    kw = {'crd': dict(nce_k=nce_k)} if nce_k else {}
    make = {m: (lambda m=m: method_callback(m, t_model, **kw.get(m, {}))) for m in METHODS}
    tmp = tempfile.TemporaryDirectory()
    for m in CACHED:  # from the cache in `tmp`, filled below and reused (memory-mapped) by every timed epoch
        make[f'{m} cached'] = lambda m=m: method_callback(m, t_model, cache=True, path=Path(tmp.name)/m, valid_features=False, verbose=False)
    epoch_time(dls, student)  # warm-up
    fills = {}
    for m in CACHED:
        cb = make[f'{m} cached']()
        epoch_time(dls, student, cb)  # fills the cache
        c = cb.caches['train']
        fills[m] = (c.fill_seconds, c.nbytes / c.n_items)
    names = ['plain', 'teacher'] + list(METHODS) + [f'{m} cached' for m in CACHED]
    times = {n: [] for n in names}
    for r in range(repeats):  # interleaved, the order rotated, so that background load affects all alike
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(teacher_time(dls, t_model) if n == 'teacher' else epoch_time(dls, student, None if n == 'plain' else make[n]()))
            print(f"repeat {r}: {n} {times[n][-1]:.2f} s", flush=True)
    tmp.cleanup()
    med = {n: statistics.median(v) for n, v in times.items()}
    ref = med['plain'] + med['teacher']
    rows = [dict(measure='plain student epoch', sec=round(med['plain'], 2), x_ref=round(med['plain'] / ref, 3)),
            dict(measure='teacher forward over the same batches', sec=round(med['teacher'], 2), x_ref=round(med['teacher'] / ref, 3))]
    rows += [dict(measure=f"{m} epoch", sec=round(med[m], 2), x_ref=round(med[m] / ref, 3)) for m in METHODS]
    rows += [dict(measure=f"{m} epoch, teacher features from the cache", sec=round(med[f'{m} cached'], 2),
                  x_ref=round(med[f'{m} cached'] / ref, 3)) for m in CACHED]
    rows += [dict(measure=f"{m}: the cache's fill (once; {b / 1e3:.1f} KB per item in fp16)", sec=round(f, 2), x_ref=round(f / ref, 3))
             for m, (f, b) in fills.items()]
    df = pd.DataFrame(rows).rename(columns={'x_ref': 'x (plain + teacher)'})
    cmd = (f"python bench/feature_cost.py --teacher {teacher} --student {student} --fraction {fraction} --bs {bs} "
           f"--repeats {repeats} --threads {threads}" + (f" --nce-k {nce_k}" if nce_k else ''))
    over = [m for m in METHODS if med[m] / ref > 1.30] + [f'{m} cached' for m in CACHED if med[f'{m} cached'] / ref > 1.30]
    text = (f"# Feature methods: cost per epoch\n\nCommand: `{cmd}`\n\n"
            f"Teacher {teacher} ({count_parameters(t_model):,} params, untrained: timing only), student {student}, "
            f"Fashion-MNIST {len(dls.train_ds):,} training images, batch {bs}, {torch.get_num_threads()} CPU thread(s), "
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}. Seconds of the training phase of one "
            f"epoch (median of {repeats} interleaved repeats; the first batch's dry run, which builds the connectors, is inside "
            f"the epoch; the cached rows' fill, once before them, is its own row).\n\n" + to_markdown(df) +
            f"\n\nAbove the 1.30 x target: {', '.join(over) if over else 'none'}.\n\n"
            f"CRD's memory: its two banks (128-dim float32 rows, one per training item) take {crd_bank_bytes(60000) / 1e6:.1f} MB "
            f"for Fashion-MNIST's 60,000 items, {crd_bank_bytes(len(dls.train_ds)) / 1e6:.1f} MB for the {len(dls.train_ds):,} here.\n")
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f'{out}.md').write_text(text)
    return df


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--teacher', default='cifar_resnet56')
    p.add_argument('--student', default='cifar_resnet20')
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument('--bs', type=int, default=128)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--nce-k', type=int, default=None)
    p.add_argument('--out', default='results/feature_cost')
    a = vars(p.parse_args()); a['nce_k'] = a.pop('nce_k')
    main(**a)
