"""The plain-install check (`make test-install`): kd_fastai installed from a wheel with its runtime requirements only.

Run it with the dev environment's python (it uses the standard library, pip and `packaging` from there):

    .venv/bin/python tests/plain_install.py [--work .plain-install] [--src DIR]

1. builds a wheel from a clean copy of the working tree's package sources (git's tracked and untracked, not ignored,
   files), so that a stale `build/` folder cannot leak removed modules into it, and checks its contents: every module,
   subpackage and shipped teacher (`*.pth`) of the sources, and its `Requires-Dist` = settings.ini's `requirements`;
2. makes a fresh virtual environment that sees the dev environment's torch and torchvision (and their own dependencies)
   through symlinks in a folder put on its path by a `.pth` file, so that pip takes them as installed and nothing
   multi-GB is downloaded again; nothing else of the dev environment is visible there;
3. `pip install --no-index`s the wheel there from a wheelhouse: pip adds exactly kd_fastai's runtime requirements
   (fastai & co, ~80 wheels, 144 MB). The wheelhouse is filled from the package index on the first run, when
   settings.ini's requirements change, when it is 7 days old (`--max-age-days`) or with `--refresh`: `pip install
   --dry-run --report` in the fresh environment says what to fetch (pip's own HTTP cache stays empty here: the
   registry proxy strips the caching headers);
4. runs `tests/plain_install_smoke.py` with that environment's python from a folder outside the checkout: it asserts
   that accelerate, nbdev and pytest are absent, imports `kd_fastai.all`, loads the smallest shipped teacher, distils
   it for one short epoch, exports the student and predicts with the loaded learner.

Exits nonzero when any step fails. What it keeps is under `--work` (git-ignored `.plain-install/`: the source copy, the
wheel, the torch symlinks, the wheelhouse); the fresh environment goes to a new folder in /dev/shm when there is room
(else `--work`/venv) and is removed at the end, also when the check fails (`--keep` keeps it).
"""
from __future__ import annotations
import argparse, configparser, json, os, re, shutil, subprocess, sys, tempfile, time, zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP_FILES = ('setup.py', 'setup.cfg', 'pyproject.toml', 'settings.ini', 'README.md', 'MANIFEST.in', 'LICENSE')
TMP_PREFIX = 'kd_fastai-plain-install-'
BASE_ROOTS = ('torch', 'torchvision')  # what the fresh environment reuses from the dev one, with their dependencies


def log(msg): print(f'[plain-install] {msg}', flush=True)

def fail(msg): raise SystemExit(f'[plain-install] FAILED: {msg}')

def norm(name): return re.sub(r'[-_.]+', '-', name).lower()

def run(cmd, what, **kw):
    "Run `cmd`; on failure print its output and stop"
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode:
        sys.stdout.write(r.stdout[-20000:]); sys.stderr.write(r.stderr[-20000:])
        fail(f'{what} (exit {r.returncode}): {" ".join(map(str, cmd))}')
    return r, time.perf_counter() - t


def settings(src:Path):
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(src/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def source_files(src:Path, lib:str) -> list[Path]:
    "Files of the build: the top-level packaging files and the package's files that git tracks or would track"
    if (src/'.git').exists():
        out = subprocess.run(['git', '-C', str(src), 'ls-files', '-z', '-co', '--exclude-standard', '--', lib],
                             capture_output=True, text=True, check=True).stdout
        pkg = sorted({Path(p) for p in out.split('\0') if p})
    else:
        pkg = sorted(p.relative_to(src) for p in (src/lib).rglob('*') if p.is_file())
    pkg = [p for p in pkg if (src/p).is_file() and '__pycache__' not in p.parts and p.suffix != '.pyc']
    return [Path(f) for f in TOP_FILES if (src/f).is_file()] + pkg


def build_wheel(src:Path, work:Path, lib:str):
    "Copy the sources to `work/src` and build a wheel of them into `work/dist`; returns (wheel, copied files)"
    tree, dist = work/'src', work/'dist'
    for d in (tree, dist): shutil.rmtree(d, ignore_errors=True)
    files = source_files(src, lib)
    for f in files:
        (tree/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src/f, tree/f)
    try: import setuptools  # noqa: F401 (the dev environment's setuptools builds it; else pip fetches one)
    except ImportError: isolation = []
    else: isolation = ['--no-build-isolation']
    _, secs = run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', *isolation, '-w', dist, tree], 'building the wheel')
    wheels = sorted(dist.glob('*.whl'))
    if len(wheels) != 1: fail(f'expected one wheel in {dist}, found {[w.name for w in wheels]}')
    return wheels[0], files, secs


def check_wheel(whl:Path, files:list, lib:str, requirements:list):
    "The wheel holds every module, subpackage and data file of the sources, some teacher weights, and the runtime requirements"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta_name = next((n for n in names if n.endswith('.dist-info/METADATA')), None)
        if meta_name is None: fail(f'{whl.name} has no METADATA')
        meta = z.read(meta_name).decode()
    pkg = [f.as_posix() for f in files if f.parts[0] == lib]
    missing = [f for f in pkg if f not in names]
    if missing: fail(f'{whl.name} lacks {len(missing)} file(s) of the sources: {missing[:10]}')
    if f'{lib}/__init__.py' not in names or f'{lib}/all.py' not in names: fail(f'{whl.name} lacks {lib}/__init__.py or all.py')
    subpkgs = sorted({n.rsplit('/', 1)[0] for n in names if n.startswith(lib + '/') and n.endswith('/__init__.py')} - {lib})
    weights = sorted(n for n in names if n.startswith(lib + '/') and n.endswith('.pth'))
    if not weights: fail(f'{whl.name} holds no shipped teacher weights ({lib}/**/*.pth)')
    reqs = [l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')]
    runtime = sorted(r for r in reqs if 'extra ==' not in r)
    if sorted(map(_squash, runtime)) != sorted(map(_squash, requirements)):
        fail(f"{whl.name} requires {runtime}, settings.ini's requirements are {requirements}")
    mods = sum(n.endswith('.py') for n in names if n.startswith(lib + '/'))
    return dict(modules=mods, subpackages=[s.split('/', 1)[1] for s in subpkgs], weights=weights, requires=runtime)

def _squash(req): return re.sub(r'\s+', '', req).lower()


def requirement_closure(roots) -> list:
    "The installed distributions that `roots` need (markers evaluated for this interpreter, extras followed), roots first"
    try: from packaging.requirements import Requirement
    except ImportError: from pip._vendor.packaging.requirements import Requirement
    seen, done, todo = {}, {}, [(norm(r), frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop(0)
        if name in done and extras <= done[name]: continue
        if name not in seen:
            try: seen[name] = metadata.distribution(name)
            except metadata.PackageNotFoundError: fail(f'{name} (needed by {", ".join(roots)}) is not installed in {sys.prefix}')
        done[name] = done.get(name, frozenset()) | extras
        for r in seen[name].requires or []:
            req = Requirement(r)
            if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in ('', *done[name])):
                todo.append((norm(req.name), frozenset(map(norm, req.extras))))
    return list(seen.values())


def link_base(base:Path, dists) -> list:
    "Fill `base` with symlinks to the top-level files and folders of `dists` (packages, modules, dist-info)"
    shutil.rmtree(base, ignore_errors=True); base.mkdir(parents=True)
    names = []
    for d in dists:
        root = Path(d.locate_file('')).resolve()
        tops = {Path(f).parts[0] for f in (d.files or [])} | ({Path(d._path).name} if hasattr(d, '_path') else set())
        for top in sorted(tops):
            if top in ('..', '__pycache__') or top.endswith('.pth') or not (root/top).exists(): continue
            if not (base/top).exists(): (base/top).symlink_to(root/top)
        names.append(f"{d.metadata['Name']}=={d.version}")
    return names


def remove(folder:Path):
    "rm -rf `folder` (many thousand files: faster than shutil.rmtree)"
    if folder.exists(): subprocess.run(['rm', '-rf', str(folder)], check=True)


def make_venv(venv:Path, base:Path):
    "A fresh environment (no pip, no system site-packages) whose path ends with `base`"
    t = time.perf_counter()
    remove(venv)  # a previous run's, left when it failed or kept
    _, secs = run([sys.executable, '-m', 'venv', '--without-pip', venv], 'creating the fresh environment')
    py = venv/'bin'/'python'
    site = run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], 'asking the fresh python')[0].stdout.strip()
    Path(site, '_kd_fastai_torch_base.pth').write_text(f'{base.resolve()}\n')
    return py, Path(site), time.perf_counter() - t


def clean_env(venv:Path):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYTHONSTARTUP')}
    env['PATH'] = f"{venv/'bin'}{os.pathsep}{env.get('PATH', '')}"
    env['VIRTUAL_ENV'] = str(venv)
    return env


def fill_wheelhouse(py:Path, whl:Path, house:Path, env:dict, stamp:str):
    """Resolve what `pip install whl` adds to the fresh environment (`--dry-run --report`, torch counted as installed)
    and fetch exactly those files into `house` (pip's own HTTP cache does not work behind this proxy, which strips
    the caching headers); returns the seconds it took"""
    t = time.perf_counter()
    shutil.rmtree(house, ignore_errors=True); house.mkdir(parents=True)
    report = house/'report.json'
    run([sys.executable, '-m', 'pip', '--python', py, 'install', '-q', '--dry-run', '--report', report, whl],
        'resolving the runtime requirements (pip install --dry-run)', env=env, cwd=house)
    items = [i for i in json.loads(report.read_text())['install'] if norm(i['metadata']['name']) != norm(whl.name.split('-')[0])]
    urls = [i['download_info']['url'] for i in items]
    run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', house, *urls], 'fetching the requirements into the wheelhouse',
        env=env, cwd=house)
    (house/'STAMP').write_text(stamp)
    return time.perf_counter() - t


def install(py:Path, whl:Path, house:Path, env:dict, refresh:bool, max_age_days:float):
    "pip install `whl` into the fresh environment from the wheelhouse, offline; (re)fill the wheelhouse first when needed"
    stamp = f"{' '.join(sorted(reqs_of(whl)))} python{sys.version_info[0]}.{sys.version_info[1]}\n"
    f = house/'STAMP'
    stale = refresh or not f.exists() or f.read_text() != stamp or time.time() - f.stat().st_mtime > max_age_days*86400
    t_fill = fill_wheelhouse(py, whl, house, env, stamp) if stale else 0.
    cmd = [sys.executable, '-m', 'pip', '--python', py, 'install', '--progress-bar', 'off', '--no-compile', '--no-index', '--find-links', house, whl]
    t = time.perf_counter()
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, cwd=house)
    if r.returncode and not stale:  # the wheelhouse misses something: fill it again, once
        log(f'the wheelhouse does not satisfy the requirements ({r.stderr.strip().splitlines()[-1:]}): filling it again')
        t_fill = fill_wheelhouse(py, whl, house, env, stamp)
        t = time.perf_counter()
        r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, cwd=house)
    if r.returncode:
        sys.stdout.write(r.stdout[-20000:]); sys.stderr.write(r.stderr[-20000:])
        fail(f'pip install of the wheel (runtime requirements only) (exit {r.returncode})')
    return r, t_fill, time.perf_counter() - t


def reqs_of(whl:Path):
    with zipfile.ZipFile(whl) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    return [l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work', default=str(REPO/'.plain-install'), help='folder for the copy, the wheel and the environment')
    p.add_argument('--src', default=str(REPO), help='the source tree to build (default: this checkout)')
    p.add_argument('--wheelhouse', default=os.environ.get('KD_FASTAI_WHEELHOUSE'),
                   help="the runtime requirements' wheels, kept between runs (default: WORK/wheelhouse; $KD_FASTAI_WHEELHOUSE)")
    p.add_argument('--refresh', action='store_true', help='fill the wheelhouse again from the package index')
    p.add_argument('--max-age-days', type=float, default=7., help='fill the wheelhouse again when it is older than this')
    p.add_argument('--venv', help='where to make the fresh environment (default: a new folder in /dev/shm, else WORK/venv)')
    p.add_argument('--keep', action='store_true', help='keep the fresh environment afterwards, to look into it')
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    work, src = Path(a.work).resolve(), Path(a.src).resolve()
    work.mkdir(parents=True, exist_ok=True)
    house = Path(a.wheelhouse).resolve() if a.wheelhouse else work/'wheelhouse'
    cfg = settings(src)
    lib, requirements = cfg['lib_path'], cfg.get('requirements', '').split()

    whl, files, t_build = build_wheel(src, work, lib)
    info = check_wheel(whl, files, lib, requirements)
    log(f"wheel {whl.name} ({t_build:.1f} s): {info['modules']} modules, subpackages {info['subpackages'] or 'none'}, "
        f"{len(info['weights'])} teacher weight file(s) ({', '.join(Path(w).name for w in info['weights'][:3])}...), "
        f"requires {' '.join(info['requires'])}")

    base_names = link_base(work/'torch-base', requirement_closure(BASE_ROOTS))
    venv = Path(a.venv).resolve() if a.venv else venv_place(work)
    try: t_venv, t_fill, t_pip, t_smoke = check_install(venv, work, whl, house, base_names, cfg, a)
    finally:
        t = time.perf_counter()
        if not a.keep: remove(venv.parent if venv.parent.name.startswith(TMP_PREFIX) else venv)
        else: log(f'kept the fresh environment {venv}')
        t_clean = time.perf_counter() - t
    log(f'OK: plain install of {whl.name} (runtime requirements only) imports, loads a shipped teacher, distils, exports '
        f'and predicts; wheel {t_build:.1f} s, fresh environment {t_venv:.1f} s, '
        + (f'wheelhouse filled {t_fill:.1f} s, ' if t_fill else 'wheelhouse reused, ') + f'pip install {t_pip:.1f} s, '
        f'smoke test {t_smoke:.1f} s, clean-up {t_clean:.1f} s, total {time.perf_counter() - t0:.1f} s')


def venv_place(work:Path) -> Path:
    """Where the fresh environment goes: a new folder in /dev/shm when it has room (deleting ~11,000 files on this
    machine's disk, mounted with `discard`, takes ~50 s; on tmpfs it is instant), else WORK/venv"""
    shm = Path('/dev/shm')
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 3e9:
        return Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=shm))/'venv'
    return work/'venv'


def check_install(venv:Path, work:Path, whl:Path, house:Path, base_names:list, cfg, a):
    "Steps 2-4 in the fresh environment `venv`; returns their seconds"
    py, site, t_venv = make_venv(venv, work/'torch-base')
    log(f'fresh environment {venv} ({t_venv:.1f} s) sees from the dev environment only: {" ".join(base_names)}')

    env = clean_env(venv)
    r, t_fill, t_pip = install(py, whl, house, env, a.refresh, a.max_age_days)
    if t_fill: log(f'wheelhouse {house} filled from the package index ({t_fill:.1f} s)')
    got = next((l.split('Successfully installed', 1)[1].split() for l in r.stdout.splitlines()
                if l.startswith('Successfully installed')), [])
    have = {norm(n.split('==')[0]) for n in base_names}
    again = [g for g in got if norm(g.rsplit('-', 1)[0]) in have or re.match(r'(torch|triton|nvidia|cuda)\b', norm(g))]
    if again: fail(f'pip installed torch or its dependencies again, which the environment should take from {work/"torch-base"}: {again}')
    log(f'pip install --no-index {whl.name} ({t_pip:.1f} s) added {len(got)} distributions: {" ".join(got)}')

    run_dir = work/'run'; shutil.rmtree(run_dir, ignore_errors=True); run_dir.mkdir()
    smoke = run_dir/'plain_install_smoke.py'
    shutil.copy2(Path(__file__).with_name('plain_install_smoke.py'), smoke)
    t = time.perf_counter()
    r = subprocess.run([str(py), smoke.name, '--plain'], cwd=run_dir, env=env)
    t_smoke = time.perf_counter() - t
    if r.returncode: fail(f'the smoke test in the fresh environment (exit {r.returncode}, {t_smoke:.1f} s): see above')

    scripts = [c.split('=', 1)[0] for c in cfg.get('console_scripts', '').split()]
    missing = [n for n in scripts if not (venv/'bin'/n).exists()]
    if missing: fail(f'pip did not install the console script(s) {missing} (the smoke test loaded their entry points)')
    return t_venv, t_fill, t_pip, t_smoke

if __name__ == '__main__': main()
