#!/usr/bin/env python
"""Build the documentation site from the notebooks (what `make docs` runs).

1. The notebooks that teach (`TEACHING`) are executed on copies in `_site_build/executed/` (cells flagged with
   settings.ini's `tst_flags`, e.g. `#| slow`, are skipped as `nbdev_test` skips them); the others are rendered as
   they are, without execution.
2. Every notebook in nbs/ becomes a Markdown page in `_site_build/pages/`, named as nbdev names its pages (the file
   name without its number: `13_core.kd.ipynb` -> `core.kd.html`). nbdev directives are honoured: `#| hide` (and
   `exporti`, `default_exp`, `include: false`) cells are left out, `echo: false`/`hide_input` show only the outputs,
   `output: false`/`hide_output` only the code, `hide_line` lines are dropped. `#| export` cells show their code in a
   folded "Source" block, followed by an API entry for each public function, class or `@patch`ed method that they
   define: heading, signature, docstring and a table of the arguments from their docments (as nbdev's `show_doc`).
   Back-ticked names of documented objects in the prose link to their API entry.
3. `mkdocs build --strict` (configuration: the top-level `mkdocs.yml`, inherited by the generated
   `_site_build/mkdocs.yml` that adds the navigation) writes the site to `_site/`: a broken link or anchor, or a page
   missing from the navigation, fails the build.
"""
from __future__ import annotations
import argparse, ast, base64, configparser, importlib, inspect, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# The notebooks that teach, executed for the site so that their outputs and plots show. One entry per notebook: its
# name without the number prefix; alternatives (old and new names) are separated by '|' and the first that exists wins.
TEACHING = [
    'index',                  # the landing page
    'core.kd|kd',             # knowledge distillation: KDCallback
    'core.registry|methods',  # the methods table, Learner.distill(method=...)
    'cache.store|cache',      # the teacher-output cache
    'fastai_path',            # the fastai user's own path, end to end
    'leaderboard',            # every method side by side
]

ROOT = Path(__file__).resolve().parent.parent
NBS, DOCS = ROOT/'nbs', ROOT/'docs'
BUILD = ROOT/'_site_build'
EXECUTED, PAGES = BUILD/'executed', BUILD/'pages'
SITE = ROOT/'_site'

_cfg = configparser.ConfigParser()
_cfg.read(ROOT/'settings.ini')
CFG = _cfg['DEFAULT']
LIB = CFG.get('lib_path', 'kd_fastai')
GIT_URL, BRANCH = CFG.get('git_url', '').rstrip('/'), CFG.get('branch', 'main')
SKIP_FLAGS = set(CFG.get('tst_flags', '').split())

# ---------------------------------------------------------------------------------------------------------- notebooks

_NUM = re.compile(r'^\d+[a-z]?_')

def page_name(nb: Path) -> str:
    "nbdev's page name of notebook `nb`: its path under nbs/ without the number prefixes"
    rel = nb.relative_to(NBS).with_suffix('')
    return '/'.join(_NUM.sub('', p) for p in rel.parts)

def find_notebooks() -> list[Path]:
    "Every notebook under nbs/, in nbdev's order (file names), skipping folders that start with '_' or '.'"
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

def teaching_notebooks(nbs: list[Path]) -> list[Path]:
    "The notebooks of `TEACHING`; an entry that matches no notebook is an error (a missing page)"
    by_name, found = {page_name(p): p for p in nbs}, []
    for entry in TEACHING:
        hit = next((by_name[a] for a in entry.split('|') if a in by_name), None)
        if hit is None: raise SystemExit(f"docs/build.py: no notebook in nbs/ matches TEACHING entry {entry!r}")
        found.append(hit)
    return found

def read_nb(path: Path) -> dict: return json.loads(path.read_text(encoding='utf-8'))
def src(cell) -> str: return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)(:?)\s*(.*?)\s*$')
_HIDE_LINE = re.compile(r'#\s*\|\s*hide_line\s*$')

def split_directives(code: str) -> tuple[dict, str]:
    "The cell's leading nbdev directives (`{'export': '', 'eval': 'false', ...}`) and its code without them"
    lines, d = code.splitlines(), {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or _DIRECTIVE.match(lines[i])):
        if m := _DIRECTIVE.match(lines[i]): d[m.group(1)] = m.group(3)
        i += 1
    body = [l for l in lines[i:] if not _HIDE_LINE.search(l)]
    return d, '\n'.join(body).strip('\n')

def is_skipped(d: dict, code: str) -> bool:
    "Whether execution skips this code cell, as `nbdev_test` does"
    return bool(SKIP_FLAGS & d.keys()) or d.get('eval', '').lower() == 'false' or 'nbdev_export' + '(' in code

# ----------------------------------------------------------------------------------------------------------- execution

def execute(nb_path: Path, dest: Path):
    "Run the notebook `nb_path` in this process as `nbdev_test` runs it, and write it with its outputs to `dest`"
    from execnb.nbio import write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    import nbdev.showdoc
    nbdev.showdoc.BasicMarkdownRenderer = ApiDoc  # explicit `show_doc` cells render as the site's API entries
    os.environ['IN_TEST'] = '1'
    sys.path.insert(0, str(ROOT))
    nb = NBProcessor(nb_path, procs=[], process=True).nb  # the code without its directives, as nbdev_test runs it
    shell = CaptureShell(nb_path)
    def skip(cell):
        if cell.cell_type != 'code': return True
        return is_skipped({k.rstrip(':'): ' '.join(v) for k, v in (cell.directives_ or {}).items()}, cell.source)
    os.chdir(nb_path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=skip)
    except Exception:
        sys.stderr.write(shell.prettytb(fname=nb_path) + '\n')
        raise SystemExit(1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dest)  # the same cells as the notebook: the pages take their code from it, the outputs from here
    import resource
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(f'cpu_seconds={sum(r.ru_utime + r.ru_stime for r in ru):.1f}')

def execute_all(nbs: list[Path], jobs: int, timeout: int, retries: int = 1) -> dict[Path, tuple[float, float]]:
    """Execute `nbs` in subprocesses, `jobs` at a time, the longest of the last build first; (wall, CPU) seconds of
    each. A notebook that fails is run `retries` more times (a flaky test cell should not cost the site: `nbdev_test`
    is where the notebooks' tests fail), with a warning that shows the failure."""
    try: last = json.loads((BUILD/'manifest.json').read_text())['seconds']
    except (OSError, ValueError, KeyError): last = {}
    order = sorted(nbs, key=lambda nb: -last.get(f'execute {nb.name}', [0])[0])
    def one(nb):
        t0 = time.time()
        dest = EXECUTED/nb.relative_to(NBS)
        for attempt in range(retries + 1):
            r = subprocess.run([sys.executable, __file__, '--execute', str(nb), str(dest)], cwd=ROOT,
                               capture_output=True, text=True, timeout=timeout)
            if not r.returncode: break
            msg = f'executing {nb.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-6000:]}'
            if attempt == retries: raise RuntimeError(msg)
            print(f'WARNING (run again): {msg}', flush=True)
        cpu = re.findall(r'^cpu_seconds=([\d.]+)$', r.stdout, re.M)
        return time.time() - t0, float(cpu[-1]) if cpu else float('nan')
    with ThreadPoolExecutor(jobs) as ex: res = dict(zip(order, ex.map(one, order)))
    return {nb: res[nb] for nb in nbs}

# ---------------------------------------------------------------------------------------------------------- API tables

def _esc(s) -> str:
    "Text for one Markdown table cell"
    return str(s).replace('|', r'\|').replace('\n', '<br>').strip()

def _default(v) -> str:
    if getattr(v, '__name__', None) and (inspect.isfunction(v) or inspect.isclass(v) or inspect.isbuiltin(v)):
        return v.__name__
    return repr(v)

def _anno(a) -> str:
    if isinstance(a, str): return a
    return inspect.formatannotation(a).replace(' ', '')

def signature_str(sym, nm: str) -> str | None:
    "`nm(a, b:int=1, ...)` (one argument a line when long), or None where `sym` has no signature"
    try: sig = inspect.signature(sym)
    except (TypeError, ValueError): return None
    ps = []
    for p in sig.parameters.values():
        s = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '') + p.name
        if p.annotation is not p.empty: s += ':' + _anno(p.annotation)
        if p.default is not p.empty: s += '=' + _default(p.default)
        ps.append(s)
    ret = f' -> {_anno(sig.return_annotation)}' if sig.return_annotation is not sig.empty else ''
    one = f"{nm}({', '.join(ps)}){ret}"
    if len(one) <= 100 or not ps: return one
    return f'{nm}(\n' + ''.join(f'    {p},\n' for p in ps) + f'){ret}'

def args_table(sym) -> str:
    "A Markdown table of `sym`'s arguments (and return value): types and defaults from its signature, details from its docments"
    from fastcore.docments import docments
    try: sig, dm = inspect.signature(sym), docments(sym, full=True)
    except Exception: return ''
    empty, rows = inspect.Parameter.empty, []
    for k, p in sig.parameters.items():
        doc = (dm.get(k) or {}).get('docment')
        rows.append([f'`{k}`', '' if p.annotation is empty else f'`{_esc(_anno(p.annotation))}`',
                     '' if p.default is empty else f'`{_esc(_default(p.default))}`', _esc(doc or '')])
    ret = (dm.get('return') or {}).get('docment')
    if ret: rows.append(['**Returns**', '' if sig.return_annotation is empty else f'`{_esc(_anno(sig.return_annotation))}`',
                         '', _esc(ret)])
    if not any(r[3] for r in rows): return ''  # no docments: the signature says it all
    cols = [i for i in range(4) if i == 0 or any(r[i] for r in rows)]
    hdr = ['Argument', 'Type', 'Default', 'Details']
    out = ['| ' + ' | '.join(hdr[i] for i in cols) + ' |', '|' + '|'.join('---' for _ in cols) + '|']
    out += ['| ' + ' | '.join(r[i] for i in cols) + ' |' for r in rows]
    return '\n'.join(out)

def source_url(sym) -> str | None:
    "The line of `sym`'s definition on the repository's web page"
    try:
        f = inspect.unwrap(getattr(sym, 'fget', sym))
        path = Path(inspect.getsourcefile(f)).resolve().relative_to(ROOT)
        line = inspect.getsourcelines(f)[1]
    except (TypeError, OSError, ValueError): return None
    return f'{GIT_URL}/blob/{BRANCH}/{path.as_posix()}#L{line}' if GIT_URL else None

def anchor(nm: str) -> str: return nm.lower()  # nbdev's anchors: `kdcallback`, `learner.distill`

def api_markdown(sym, nm: str, level: int = 3) -> str:
    "The API entry of `sym`: heading (nbdev's anchor), source link, signature, docstring, arguments table"
    out = [f"{'#' * level} `{nm}` {{ #{anchor(nm)} .api-heading }}", '']
    if url := source_url(sym): out += [f'[source]({url}){{ .api-source }}', '']
    if sig := signature_str(getattr(sym, 'fget', sym), nm): out += ['```python', sig, '```', '']
    doc = inspect.getdoc(sym) or ''
    if doc:
        first, *rest = doc.split('\n', 1)
        out += [f'*{first.strip()}*' if not first.strip().startswith(('*', '`')) else first, '']
        if rest and rest[0].strip(): out += [rest[0].strip(), '']
    if tbl := args_table(getattr(sym, 'fget', sym)): out += ['<div class="api-args" markdown>', '', tbl, '', '</div>', '']
    return '\n'.join(out) + '\n'

class ApiDoc:
    "Stands in for nbdev's `show_doc` renderer in executed notebooks: the site's API entry"
    def __init__(self, sym, name=None, title_level=3):
        self.sym, self.nm, self.level = sym, name or getattr(sym, '__qualname__', str(sym)), title_level
    def _repr_markdown_(self): return api_markdown(self.sym, self.nm, self.level)

def _patch_target(node) -> str | None:
    "`Learner` for `@patch def f(self:Learner)`, else None"
    pat = any((isinstance(d, ast.Name) and d.id == 'patch') or
              (isinstance(d, ast.Call) and getattr(d.func, 'id', None) == 'patch') for d in node.decorator_list)
    if not pat or not node.args.args or node.args.args[0].annotation is None: return None
    a = node.args.args[0].annotation
    if isinstance(a, ast.Tuple): a = a.elts[0]
    return ast.unparse(a)

def defined_names(code: str) -> list[str]:
    "Public names that `code` defines at its top level, as nbdev's `show_doc` names them (`Learner.distill`)"
    try: tree = ast.parse(code)
    except SyntaxError: return []
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): continue
        if node.name.startswith('_') and not node.name.startswith('__'): continue
        tgt = _patch_target(node) if not isinstance(node, ast.ClassDef) else None
        out.append(f'{tgt}.{node.name}' if tgt else node.name)
    return out

def resolve(mod, nm: str):
    obj = mod
    for part in nm.split('.'): obj = getattr(obj, part)
    return obj

def documented_methods(cls) -> list[str]:
    "Public methods and properties of `cls` (its own, in its module) that have a docstring"
    def fn(v): return getattr(v, '__func__', None) or getattr(v, 'fget', None) or v
    return [k for k, v in vars(cls).items() if not k.startswith('_')
            and (inspect.isfunction(v) or isinstance(v, (property, staticmethod, classmethod)))
            and getattr(fn(v), '__module__', None) == cls.__module__ and fn(v).__doc__]

# --------------------------------------------------------------------------------------------------------- conversion

_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
_LINK = re.compile(r'(!?)\[([^\]]*)\]\(([^)\s]+)((?:\s+"[^"]*")?)\)')
_TICKED = re.compile(r'(?<![\[\w`])`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(\(\))?`(?![\]`])')

def terminal(text: str) -> str:
    "What a terminal shows for `text`: ANSI codes dropped, each '\\r' writing over its line (progress bars), no blank lines"
    lines = []
    for line in _ANSI.sub('', text).split('\n'):
        shown = ''
        for seg in line.split('\r'): shown = seg + shown[len(seg):]
        if shown.strip(): lines.append(shown.rstrip())
    return '\n'.join(lines)

def fence(text: str, lang: str = '') -> str:
    ticks = '```'
    while ticks in text: ticks += '`'
    return f'{ticks}{lang}\n{text.rstrip()}\n{ticks}\n'

def indent(text: str, n: int = 4) -> str: return '\n'.join((' ' * n + l) if l.strip() else '' for l in text.splitlines())

class Converter:
    "Turns notebooks into Markdown pages; knows every page and every API entry to link to"
    def __init__(self, nbs: list[Path], executed: dict[Path, Path]):
        self.nbs, self.executed = nbs, executed
        self.names = {nb: page_name(nb) for nb in nbs}
        dup = {n for n in self.names.values() if list(self.names.values()).count(n) > 1}
        if dup: raise SystemExit(f'docs/build.py: two notebooks give the same page name: {sorted(dup)}')
        self.apis = {}     # notebook -> {cell index: [(name, obj, level)]}
        self.symbols = {}  # name -> (page, anchor)
        self.missing = []  # names defined in export cells that their module lacks
        for nb in nbs: self._collect_api(nb)

    def _collect_api(self, nb: Path):
        cells, mod_name, shown, seen, per_cell = read_nb(nb)['cells'], None, set(), set(), {}
        for c in cells:
            if c['cell_type'] == 'code':
                d, code = split_directives(src(c))
                if 'default_exp' in d: mod_name = d['default_exp']
                shown |= set(re.findall(r'^\s*show_doc\(\s*([\w.]+)', code, re.M))
        for i, c in enumerate(cells):
            if c['cell_type'] != 'code': continue
            d, code = split_directives(src(c))
            if not ({'export', 'exports'} & d.keys()) or 'hide' in d: continue
            target = d.get('export') or d.get('exports') or mod_name
            if not target: continue
            mod = importlib.import_module(f'{LIB}.{target}')
            entries = []
            for nm in defined_names(code):
                if nm in shown or nm in seen: continue
                try: obj = resolve(mod, nm)
                except AttributeError: self.missing.append(f'{LIB}.{target}.{nm}'); continue
                entries.append((nm, obj, 3)); seen.add(nm)
                if inspect.isclass(obj):
                    for m in documented_methods(obj):
                        if f'{nm}.{m}' not in shown | seen:
                            entries.append((f'{nm}.{m}', getattr(obj, m), 4)); seen.add(f'{nm}.{m}')
            for e in entries: self.symbols[e[0]] = (self.names[nb], anchor(e[0]))  # a later page redefining wins
            if entries: per_cell[i] = entries
        self.apis[nb] = per_cell

    # -- markdown cells
    def _link(self, nb: Path, m: re.Match) -> str:
        bang, text, target, title = m.groups()
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith(('#', '/')): return m.group(0)
        path, _, frag = target.partition('#')
        dest = (nb.parent/path).resolve()
        if dest.suffix == '.ipynb' and dest in self.names:
            new = self.names[dest] + '.md' + (f'#{frag}' if frag else '')
        elif dest.exists() and bang:  # an image beside the notebooks: copied next to the page
            rel = dest.relative_to(ROOT)
            (PAGES/'_assets'/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dest, PAGES/'_assets'/rel)
            new = f'_assets/{rel.as_posix()}'
        elif dest.exists() and ROOT in dest.parents and GIT_URL:  # another file of the repository: on GitHub
            kind = 'tree' if dest.is_dir() else 'blob'
            new = f'{GIT_URL}/{kind}/{BRANCH}/{dest.relative_to(ROOT).as_posix()}' + (f'#{frag}' if frag else '')
        else: return m.group(0)  # left as it is: the strict build reports it if it is broken
        return f'{bang}[{text}]({new}{title})'

    def _xref(self, page: str, m: re.Match) -> str:
        "`Name`, `Class.method` or `kd_fastai.module.Name` linked to its API entry"
        nm, parts = m.group(1), m.group(1).split('.')
        keys = [nm] + (['.'.join(parts[-2:]), parts[-1]] if parts[0] == LIB else [])
        key = next((k for k in keys if k in self.symbols), None)
        if key is None: return m.group(0)
        p, a = self.symbols[key]
        return f"[`{nm}{m.group(2) or ''}`]({'' if p == page else p + '.md'}#{a})"

    def markdown(self, nb: Path, text: str) -> str:
        page = self.names[nb]
        parts = re.split(r'(^```.*?^```[ \t]*$)', text, flags=re.M | re.S)  # leave fenced code alone
        for i in range(0, len(parts), 2):
            s = _LINK.sub(lambda m: self._link(nb, m), parts[i])
            parts[i] = _TICKED.sub(lambda m: self._xref(page, m), s)
        return ''.join(parts)

    # -- outputs
    def outputs(self, page: str, outs: list, n: list) -> list[str]:
        res = []
        for o in outs:
            t = o.get('output_type')
            if t == 'stream':
                if o.get('name') == 'stderr': continue  # warnings and progress noise
                text = terminal(src({'source': o.get('text', '')}))
                if text: res.append(fence(text, 'text'))
            elif t in ('display_data', 'execute_result'):
                data, meta = o.get('data', {}), o.get('metadata', {})
                img = next((k for k in ('image/svg+xml', 'image/png', 'image/jpeg') if k in data), None)
                if img:
                    n[0] += 1
                    ext = {'image/svg+xml': 'svg', 'image/png': 'png', 'image/jpeg': 'jpg'}[img]
                    f = PAGES/f'{page}_files'/f'output_{n[0]}.{ext}'
                    f.parent.mkdir(parents=True, exist_ok=True)
                    raw = src({'source': data[img]})
                    f.write_bytes(raw.encode() if ext == 'svg' else base64.b64decode(raw))
                    w = (meta.get(img) or {}).get('width')
                    res.append(f"![output]({f.relative_to(PAGES).as_posix()}){{ .nb-image{f' width={w}' if w else ''} }}\n")
                elif 'text/markdown' in data: res.append(src({'source': data['text/markdown']}) + '\n')
                elif 'text/html' in data:
                    html = '\n'.join(l for l in src({'source': data['text/html']}).splitlines() if l.strip())
                    res.append(f'<div class="nb-output" markdown="0">\n{html}\n</div>\n')
                elif 'text/plain' in data: res.append(fence(_ANSI.sub('', src({'source': data['text/plain']})), 'text'))
            elif t == 'error':
                res.append(fence(_ANSI.sub('', '\n'.join(o.get('traceback', []))), 'text'))
        return res

    # -- a page
    def page(self, nb: Path) -> str:
        page, ran = self.names[nb], nb in self.executed
        cells = read_nb(nb)['cells']
        if ran:  # outputs from the executed copy, cell by cell
            done = read_nb(self.executed[nb])['cells']
            if len(done) != len(cells):  # only with --no-execute: a copy older than the notebook
                print(f'WARNING: {self.executed[nb].name} is out of date: {nb.name} is shown without outputs', flush=True)
                ran = False
            else:
                for c, e in zip(cells, done):
                    if c['cell_type'] == 'code': c['outputs'] = e.get('outputs', [])
        apis, out, n = self.apis.get(nb, {}), [], [0]
        if not any(c['cell_type'] == 'markdown' and re.search(r'^# ', src(c), re.M) for c in cells):
            out.append(f'# {page}\n')
        for i, c in enumerate(cells):
            if c['cell_type'] == 'markdown': out.append(self.markdown(nb, src(c)) + '\n'); continue
            if c['cell_type'] != 'code': continue
            d, code = split_directives(src(c))
            if {'hide', 'exporti', 'default_exp'} & d.keys() or d.get('include', '').lower() == 'false':
                continue
            if not code.strip() and not c.get('outputs'): continue
            show_code = not ('hide_input' in d or d.get('echo', '').lower() == 'false')
            show_out = not ('hide_output' in d or d.get('output', '').lower() == 'false')
            if {'export', 'exports'} & d.keys():
                if show_code and code.strip():
                    out.append('??? note "Source"\n\n' + indent(fence(code, 'python')) + '\n')
            elif show_code and code.strip():
                out.append(fence(code, 'python'))
                if ran and is_skipped(d, code):
                    out.append('*This cell is not run for the site (`' +
                               ' '.join(sorted(SKIP_FLAGS & d.keys()) or ['eval: false']) + '`).*\n')
            if show_out: out += self.outputs(page, c.get('outputs', []), n)
            for nm, obj, level in apis.get(i, []):  # prose of the entry (not its heading) linked like the notebook's
                head, body = api_markdown(obj, nm, level).split('\n', 1)
                out.append(head + '\n' + self.markdown(nb, body))
        return '\n'.join(out)

# --------------------------------------------------------------------------------------------------------------- nav

def nav(names: list[str]) -> list:
    "Home first, then the pages in notebook order; `pkg.x` pages (and the page `pkg` itself) grouped under `pkg`"
    prefixes = {n.split('.')[0] for n in names if '.' in n}
    out, sections = [{'Home': 'index.md'}], {}
    for n in names:
        if n == 'index': continue
        key = n.split('.')[0] if '.' in n or n in prefixes else None
        if key is None: out.append(f'{n}.md'); continue
        if key not in sections:
            sections[key] = []
            out.append({key.replace('_', ' ').capitalize(): sections[key]})
        sections[key].append(f'{n}.md')
    return out

# -------------------------------------------------------------------------------------------------------------- main

def build(jobs: int = 2, timeout: int = 1800, execute_nbs: bool = True, retries: int = 1) -> dict:
    t0 = time.time()
    nbs = find_notebooks()
    teach = teaching_notebooks(nbs)
    print('teaching notebooks (executed):', ', '.join(p.name for p in teach), flush=True)
    times = {}
    if execute_nbs:
        shutil.rmtree(EXECUTED, ignore_errors=True)
        times = execute_all(teach, jobs, timeout, retries)
        for nb, (w, c) in times.items(): print(f'  executed {nb.name}: {w:.0f} s ({c:.0f} s of CPU)', flush=True)
    executed = {nb: EXECUTED/nb.relative_to(NBS) for nb in teach if (EXECUTED/nb.relative_to(NBS)).exists()}
    t1 = time.time()
    shutil.rmtree(PAGES, ignore_errors=True)
    PAGES.mkdir(parents=True)
    conv = Converter(nbs, executed)
    if conv.missing: raise SystemExit('docs/build.py: defined in export cells but not in their module '
                                      '(run `make export`?): ' + ', '.join(conv.missing))
    for nb in nbs:
        f = PAGES/f'{conv.names[nb]}.md'
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(conv.page(nb), encoding='utf-8')
    for extra in DOCS.glob('*'):
        if extra.suffix in ('.css', '.js', '.md', '.png', '.svg'): shutil.copy2(extra, PAGES/extra.name)
    names = [conv.names[nb] for nb in nbs]
    hand = sorted(f.name for f in DOCS.glob('*.md'))  # hand-written pages (docs/*.md) follow the notebooks
    cfg = {'INHERIT': '../mkdocs.yml', 'docs_dir': 'pages', 'site_dir': '../_site', 'nav': nav(names) + hand}
    (BUILD/'mkdocs.yml').write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    t2 = time.time()
    shutil.rmtree(SITE, ignore_errors=True)
    r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-q', '-f', str(BUILD/'mkdocs.yml')],
                       cwd=ROOT, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
    if r.returncode: raise SystemExit('docs/build.py: mkdocs build --strict failed')
    t3 = time.time()
    manifest = {'pages': {str(nb.relative_to(NBS)): conv.names[nb] + '.html' for nb in nbs},
                'teaching': {e: conv.names[nb] + '.html' for e, nb in zip(TEACHING, teach)},
                'api_entries': len(conv.symbols),
                'seconds': {'execute': round(t1 - t0, 1), 'convert': round(t2 - t1, 1), 'mkdocs': round(t3 - t2, 1),
                            **{f'execute {nb.name}': [round(w, 1), round(c, 1)] for nb, (w, c) in times.items()}}}
    if not execute_nbs:  # keep the last execution's times (they order the next execution)
        try: last = json.loads((BUILD/'manifest.json').read_text())['seconds']
        except (OSError, ValueError, KeyError): last = {}
        manifest['seconds'].update({k: v for k, v in last.items() if k.startswith('execute ')})
    (BUILD/'manifest.json').write_text(json.dumps(manifest, indent=1))
    print(f'site: {SITE.relative_to(ROOT)}/ ({len(nbs)} pages, {len(conv.symbols)} API entries); '
          f'execute {t1 - t0:.0f} s, convert {t2 - t1:.0f} s, mkdocs {t3 - t2:.0f} s', flush=True)
    return manifest

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--jobs', type=int, default=int(os.environ.get('DOCS_JOBS', 2)), help='notebooks run at once')
    ap.add_argument('--timeout', type=int, default=1800, help='seconds one notebook may take')
    ap.add_argument('--retries', type=int, default=1, help='runs more of a notebook that fails')
    ap.add_argument('--no-execute', action='store_true',
                    help='execute nothing: the pages take the outputs of the executed copies there are (quick preview)')
    ap.add_argument('--execute', nargs=2, metavar=('NOTEBOOK', 'DEST'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.execute: execute(Path(a.execute[0]).resolve(), Path(a.execute[1]).resolve())
    else: build(a.jobs, a.timeout, not a.no_execute, a.retries)
