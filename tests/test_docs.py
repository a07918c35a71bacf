"""The documentation site: `docs/build.py` builds it strictly (executing the teaching notebooks), and a headless
Chromium renders the home page, the KD page and the API table of `KDCallback`.

The browser is driven through the DevTools protocol over `--remote-debugging-pipe` (standard library only); it is
kept off the network (`--host-resolver-rules`), so the test is the same offline and on CI. The screenshots are
written to `_site_build/screenshots/` (git-ignored). `make test-docs` runs this file; it needs Chromium
(`apt-get install chromium`, which that target does when it is missing) and skips without it, unless
`KD_FASTAI_REQUIRE_BROWSER=1` (set by the Makefile) makes a missing browser a failure. `KD_FASTAI_DOCS_BUILT=1`
checks the site that `make docs` built instead of building it.
"""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE, BUILD = ROOT/'_site', ROOT/'_site_build'
SHOTS = BUILD/'screenshots'


def find_browser():
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if p := shutil.which(name): return p


class Chrome:
    "A headless Chromium page driven with the DevTools protocol over a pipe (JSON messages ended by NUL bytes)"
    def __init__(self, exe, width=1280, height=900):
        self.w, self.h = width, height
        to_chrome, self._cmd = os.pipe()   # chrome reads its commands on fd 3
        self._evt, from_chrome = os.pipe()  # and writes its answers on fd 4
        def fds():  # in the child: the pipe ends on fds 3 and 4 (copied first, as they may be 3 or 4 already)
            r, w = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(r, 3); os.dup2(w, 4)
        self.profile = tempfile.mkdtemp(prefix='kd_fastai_chrome_')
        self.proc = subprocess.Popen(
            [exe, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
             '--disable-dev-shm-usage', '--remote-debugging-pipe', '--host-resolver-rules=MAP * ~NOTFOUND',
             f'--user-data-dir={self.profile}', f'--window-size={width},{height}'],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome); os.close(from_chrome)
        self._buf, self._id, self.events = b'', 0, []
        target = self.send('Target.createTarget', url='about:blank')['targetId']
        self.session = self.send('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        self.send('Page.enable', session=True)
        self.send('Runtime.enable', session=True)
        self.send('Emulation.setDeviceMetricsOverride', session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self, timeout):
        end = time.time() + timeout
        while b'\0' not in self._buf:
            if time.time() > end or self.proc.poll() is not None: raise TimeoutError('no answer from Chromium')
            chunk = os.read(self._evt, 1 << 20)
            if not chunk: raise EOFError('Chromium closed its pipe')
            self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def send(self, method, session=False, timeout=60, **params):
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params}
        if session: msg['sessionId'] = self.session
        os.write(self._cmd, json.dumps(msg).encode() + b'\0')
        while True:
            m = self._read(timeout)
            if m.get('id') == self._id:
                if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
                return m.get('result', {})
            self.events.append(m)

    def wait_event(self, name, timeout=60):
        end = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get('method') == name: return self.events.pop(i)
            self.events.append(self._read(max(0.1, end - time.time())))

    def open(self, url):
        self.events.clear()
        self.send('Page.navigate', session=True, url=url)
        self.wait_event('Page.loadEventFired')
        time.sleep(0.5)  # the theme's scripts settle

    def js(self, expr):
        r = self.send('Runtime.evaluate', session=True, expression=expr, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise RuntimeError(f'{expr}: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def screenshot(self, path, clip=None):
        import base64
        kw = {'format': 'png'}
        if clip: kw.update(clip={**clip, 'scale': 1}, captureBeyondViewport=True)
        data = self.send('Page.captureScreenshot', session=True, **kw)['data']
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self):
        try: self.send('Browser.close', timeout=10)
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        os.close(self._cmd); os.close(self._evt)
        shutil.rmtree(self.profile, ignore_errors=True)


def assert_not_blank(png):
    "The screenshot holds a real page: many colours, and no single colour covering nearly all of it"
    from PIL import Image
    im = Image.open(png).convert('RGB')
    colors = im.getcolors(maxcolors=1 << 20)
    top = max(c for c, _ in colors)
    assert len(colors) > 50 and top < 0.97 * im.width * im.height, (png, len(colors), top / (im.width * im.height))


@pytest.fixture(scope='module')
def site():
    """Build the site (the dev toolchain: without the newest-fastai PYTHONPATH of `make test-latest`), or with
    `KD_FASTAI_DOCS_BUILT=1` check the one that `make docs` built"""
    if os.environ.get('KD_FASTAI_DOCS_BUILT') == '1': return json.loads((BUILD/'manifest.json').read_text())
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    t0 = time.time()
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'build.py')], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=4 * 3600)
    print(r.stdout, f'\nbuild: {time.time() - t0:.0f} s')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-8000:]
    return json.loads((BUILD/'manifest.json').read_text())


@pytest.fixture(scope='module')
def browser(site):
    exe = find_browser()
    if exe is None:
        if os.environ.get('KD_FASTAI_REQUIRE_BROWSER') == '1': pytest.fail('Chromium not found')
        pytest.skip('Chromium not found: apt-get install chromium')
    SHOTS.mkdir(parents=True, exist_ok=True)
    b = Chrome(exe)
    yield b
    b.close()


def test_every_notebook_is_a_page(site):
    nbs = sorted(str(p.relative_to(ROOT/'nbs')) for p in (ROOT/'nbs').rglob('*.ipynb')
                 if not any(s.startswith(('_', '.')) for s in p.relative_to(ROOT/'nbs').parts))
    assert sorted(site['pages']) == nbs
    for page in site['pages'].values(): assert (SITE/page).is_file(), page
    assert (SITE/'index.html').is_file() and (SITE/'search'/'search_index.json').is_file()


def build_module():
    "docs/build.py as a module"
    import importlib.util
    spec = importlib.util.spec_from_file_location('docs_build', ROOT/'docs'/'build.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_teaching_notebooks_executed(site):
    "Each teaching notebook ran, and what its cells print or return is on its page"
    import html, re
    build = build_module()
    executed = {str(p.relative_to(BUILD/'executed')): p for p in (BUILD/'executed').rglob('*.ipynb')}
    assert {site['pages'][k] for k in executed} == set(site['teaching'].values())
    shown = 0
    for name, nb in executed.items():
        page = site['pages'][name]
        text = html.unescape(re.sub(r'<[^>]+>', '', (SITE/page).read_text()))
        for c in json.loads(nb.read_text())['cells']:
            for o in c.get('outputs', []):
                if o['output_type'] == 'stream' and o['name'] == 'stdout': out = ''.join(o['text'])
                elif 'text/plain' in o.get('data', {}) and len(o['data']) == 1: out = ''.join(o['data']['text/plain'])
                else: continue
                if lines := build.terminal(out).splitlines():
                    assert lines[0].strip() in text, (page, lines[0])
                    shown += 1
        for img in re.findall(r'<img[^>]+src="([^"]+_files/[^"]+)"', (SITE/page).read_text()):
            assert (SITE/img).is_file(), img
    assert shown, 'no output of a teaching notebook on the site'


def test_outputs_render(tmp_path):
    "The build's renderer on a made-up notebook: a plot becomes an image file, show_doc a table, HTML passes through"
    import base64, io
    from PIL import Image
    build = build_module()
    buf = io.BytesIO(); Image.new('RGB', (8, 6), 'red').save(buf, format='PNG')
    def f(teacher, T:float=4.0):  # a function with docments
        "Distil `teacher`"
        ...
    f.__module__ = __name__
    outs = [{'output_type': 'display_data', 'metadata': {'image/png': {'width': 4}},
             'data': {'image/png': base64.b64encode(buf.getvalue()).decode(), 'text/plain': '<Figure>'}},
            {'output_type': 'execute_result', 'data': {'text/markdown': build.ApiDoc(f, name='f')._repr_markdown_()}},
            {'output_type': 'display_data', 'data': {'text/html': '<table><tr><td>x</td></tr></table>'}},
            {'output_type': 'stream', 'name': 'stderr', 'text': 'a warning'},
            {'output_type': 'stream', 'name': 'stdout', 'text': ' 0% [0/2]\r 50% [1/2]\r            \r\repoch 1\n'}]
    build.PAGES = tmp_path
    md = '\n'.join(build.Converter.outputs(None, 'page', outs, [0]))
    assert '![output](page_files/output_1.png){ .nb-image width=4 }' in md
    assert (tmp_path/'page_files'/'output_1.png').read_bytes() == buf.getvalue()
    assert '### `f` { #f .api-heading }' in md and '| `teacher` |' in md and '| `T` | `float` | `4.0` |' in md
    assert '<table><tr><td>x</td></tr></table>' in md and 'a warning' not in md
    assert '```text\nepoch 1\n```' in md and '[1/2]' not in md  # a progress bar leaves what the terminal shows


def test_home_page(site, browser):
    browser.open((SITE/'index.html').as_uri())
    info = browser.js("""({title: document.title, h1: document.querySelector('article h1')?.innerText,
        nav: [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')].map(a => a.getAttribute('href')),
        code: document.querySelectorAll('article pre code').length})""")
    assert 'kd_fastai' in info['title'] and info['h1'], info
    assert info['code'] > 0, info
    assert {p for p in site['pages'].values()} - {'index.html'} <= {h.split('#')[0] for h in info['nav']}, info['nav']
    assert_not_blank(browser.screenshot(SHOTS/'home.png'))


def test_kd_page_and_kdcallback_api_table(site, browser):
    page = site['teaching']['core.kd|kd']
    browser.open((SITE/page).as_uri())
    assert_not_blank(browser.screenshot(SHOTS/'kd_page.png'))
    info = browser.js("""(() => {
        const h = document.getElementById('kdcallback');
        if (!h) return null;
        let el = h.nextElementSibling, table = null;
        while (el && !/^H[1-3]$/.test(el.tagName)) { if (el.tagName === 'TABLE') { table = el; break; }
                                                    table = el.querySelector && el.querySelector('table'); if (table) break;
                                                    el = el.nextElementSibling; }
        const rows = table ? [...table.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim())) : [];
        const head = table ? [...table.querySelectorAll('thead th')].map(c => c.innerText.trim()) : [];
        const top = h.getBoundingClientRect().top + window.scrollY, bottom = table ? table.getBoundingClientRect().bottom + window.scrollY : top;
        const left = h.closest('article').getBoundingClientRect().left;
        return {title: document.title, heading: h.innerText, head, rows, top, bottom, left,
                width: h.closest('article').getBoundingClientRect().width, visible: !!(table && table.offsetHeight)};
    })()""")
    assert info, 'no element #kdcallback on the KD page'
    assert 'KDCallback' in info['heading'] and info['visible'], info
    assert info['head'][0] == 'Argument' and 'Details' in info['head'], info['head']
    args = [r[0] for r in info['rows']]
    assert {'teacher', 'T', 'alpha'} <= set(args), args
    assert all(r[-1] for r in info['rows'] if r[0] in ('teacher', 'T')), info['rows']  # docments filled in
    clip = dict(x=max(0, info['left'] - 10), y=max(0, info['top'] - 20), width=info['width'] + 20,
                height=info['bottom'] - info['top'] + 40)
    assert_not_blank(browser.screenshot(SHOTS/'kdcallback_api.png', clip=clip))
