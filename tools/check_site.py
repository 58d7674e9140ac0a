"""Open the built documentation site in a real browser (headless Chromium) and check it.

    python tools/check_site.py docs/_build/html --screenshots DIR

Serves the site on a free localhost port and checks, each in Chromium with JavaScript running:

- the index renders with its title, its navigation and its figure loaded (decoded, not broken);
- an API page renders its function with Parameters, Returns, See Also and Examples;
- a gallery page renders its figures, loaded;
- the search page, asked for ``effective_masks``, lists the function's API page.

The pages are inspected from a probe page on the same server: it loads each page in a frame,
waits for its images (or the search results), and writes what it found as JSON, which Chromium's
``--dump-dom`` prints. A screenshot of each page is saved under ``--screenshots`` and must not
be blank. Every problem is printed; the exit status is 1 if there is any, 2 if the site or the
browser is missing. Nothing is skipped.
"""

from __future__ import annotations

import argparse
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse

API_PAGE = "api/generated/connsim.effective.effective_masks.html"
GALLERY_PAGE = "auto_examples/plot_1_effective_vs_direct.html"
SEARCH = "effective_masks"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Loaded in the probe page: waits until the framed page's images have loaded (or the search
# results are in), then reports what it sees. Runs inside Chromium, so it must be JavaScript.
PROBE = """<!doctype html><html><head><meta charset="utf-8"><title>probe</title></head><body>
<pre id="report">pending</pre>
<iframe id="page" style="width:1280px;height:900px"></iframe>
<script>
const target = new URLSearchParams(location.search).get("page");
const frame = document.getElementById("page");
const started = Date.now();
function report(doc, timedOut) {
  const imgs = Array.from(doc.images).map(i => ({
    src: i.getAttribute("src"), cls: i.className, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight}));
  const results = Array.from(doc.querySelectorAll("#search-results li a, ul.search li a"))
    .map(a => ({href: a.getAttribute("href"), text: a.textContent.trim()}));
  const main = doc.querySelector("article") || doc.body;  // the page itself, not the sidebars
  const headings = main ? Array.from(main.querySelectorAll(
      "h1, h2, p.rubric, p.admonition-title, dt.field-odd, dt.field-even"))
    .map(h => h.textContent.trim().replace(/:$/, "")) : [];
  const ids = Array.from(doc.querySelectorAll("dt[id]")).map(d => d.id);
  const nav = Array.from(doc.querySelectorAll("nav a, .bd-sidebar a, .navbar a"))
    .map(a => a.getAttribute("href"));
  document.getElementById("report").textContent = JSON.stringify({
    title: doc.title, timedOut: timedOut, images: imgs, results: results,
    headings: headings, ids: ids, nav: nav,
    text: doc.body ? doc.body.innerText.slice(0, 20000) : ""});
}
function settled(doc) {
  if (target.startsWith("search.html")) {
    const box = doc.getElementById("search-results");
    return box && (box.querySelectorAll("li").length > 0 || /did not match|no documents/i.test(box.innerText))
      && !/Searching$/.test(box.innerText.trim());
  }
  return Array.from(doc.images).every(i => i.complete);
}
frame.onload = function () {
  const doc = frame.contentDocument;
  (function poll() {
    if (settled(doc)) { setTimeout(() => report(doc, false), 300); return; }
    if (Date.now() - started > 20000) { report(doc, true); return; }
    setTimeout(poll, 100);
  })();
};
frame.src = target;
</script></body></html>
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site, and the probe page at ``/__probe__.html``."""

    def do_GET(self):  # noqa: N802 - the name http.server calls
        if urllib.parse.urlsplit(self.path).path == "/__probe__.html":
            body = PROBE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # the checks print what matters
        pass


def serve(root: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on a free localhost port; returns the server and its base URL."""

    def handler(*args, **kwargs):
        return _Handler(*args, directory=root, **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_browser(given: str | None) -> str | None:
    """The Chromium executable: ``given``, else the first of :data:`BROWSERS` on the PATH."""
    if given:
        return given if shutil.which(given) else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def chromium(browser: str, args: list[str], profile: str, timeout: int = 90) -> str:
    """Run headless Chromium with ``args``; returns its standard output."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def parse_report(dom: str) -> dict:
    """The probe's JSON report from Chromium's dumped DOM (``ValueError`` if it is missing)."""
    m = re.search(r'<pre id="report">(.*?)</pre>', dom, re.S)
    if not m or m.group(1).strip() == "pending":
        raise ValueError("the probe page wrote no report (the page did not load)")
    return json.loads(html.unescape(m.group(1)))


def image_problems(report: dict, minimum: int, cls: str = "") -> list[str]:
    """Problems with a page's images: fewer than ``minimum`` (of class ``cls``), or any that
    did not load (not complete, or no pixels decoded)."""
    images = [i for i in report["images"] if cls in (i.get("cls") or "")]
    out = []
    if len(images) < minimum:
        out.append(f"{len(images)} image(s){' of class ' + cls if cls else ''}, "
                   f"expected at least {minimum}")
    out += [f"image {i['src']!r} did not load" for i in images
            if not i["complete"] or i["width"] == 0 or i["height"] == 0]
    return out


def api_problems(report: dict, name: str) -> list[str]:
    """Problems with the API page of ``name``: its object and its numpydoc sections."""
    out = []
    if name not in report["ids"]:
        out.append(f"no description of {name} (ids: {report['ids'][:5]})")
    found = {h.lower() for h in report["headings"]}  # section titles inside the article only
    out += [f"no {section!r} section" for section in ("Parameters", "Returns", "See also",
                                                       "Examples")
            if section.lower() not in found]
    return out


def search_problems(report: dict, page: str) -> list[str]:
    """Problems with the search results: none, or none that links to ``page``."""
    hrefs = [r["href"] or "" for r in report["results"]]
    if not hrefs:
        return ["the search page lists no results"]
    if not any(h.split("#")[0].endswith(page) for h in hrefs):
        return [f"no search result links to {page} (got {hrefs[:5]})"]
    return []


def screenshot_problems(path: str) -> list[str]:
    """Problems with a screenshot: missing, tiny, or (nearly) a single colour."""
    if not os.path.isfile(path) or os.path.getsize(path) < 5000:
        return [f"screenshot {path} missing or under 5 kB"]
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").resize((320, 225))
    colours = small.getcolors(maxcolors=320 * 225)
    top = max(count for count, _ in colours)
    if len(colours) < 16 or top > 0.995 * 320 * 225:
        return [f"screenshot {path} is blank ({len(colours)} colours)"]
    return []


def check(site: str, shots: str, browser: str) -> list[str]:
    """Run every check; returns the problems found (empty when the site passes)."""
    problems = []
    server, base = serve(site)
    profile = tempfile.mkdtemp(prefix="connsim-chromium-")
    try:
        pages = {
            "index": ("index.html", lambda r: (
                (["no 'connsim' in the title"] if "connsim" not in r["title"] else [])
                + image_problems(r, 1)
                + [f"no navigation link to {p}" for p in ("api/index.html",
                                                         "auto_examples/index.html",
                                                         "guide/index.html")
                   if not any((h or "").endswith(p) for h in r["nav"])])),
            "api": (API_PAGE, lambda r: api_problems(r, "connsim.effective.effective_masks")),
            "gallery": (GALLERY_PAGE, lambda r: image_problems(r, 1, "sphx-glr-single-img")),
            "search": (f"search.html?q={SEARCH}", lambda r: search_problems(r, API_PAGE)),
        }
        for name, (page, judge) in pages.items():
            url = base + "__probe__.html?page=" + urllib.parse.quote(page, safe="")
            try:
                dom = chromium(browser, ["--virtual-time-budget=30000", "--dump-dom", url],
                               profile)
                report = parse_report(dom)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                problems.append(f"{name} ({page}): {e}")
                continue
            found = judge(report)
            if report["timedOut"]:
                found.append("the page did not settle within 20 s")
            problems += [f"{name} ({page}): {p}" for p in found]
            shot = os.path.join(shots, f"{name}.png")
            try:
                chromium(browser, ["--virtual-time-budget=10000", "--window-size=1280,900",
                                   f"--screenshot={shot}", base + page], profile)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                problems.append(f"{name} ({page}): screenshot failed: {e}")
                continue
            problems += [f"{name} ({page}): {p}" for p in screenshot_problems(shot)]
            imgs = sum(1 for i in report["images"] if i["complete"] and i["width"])
            print(f"{name:8} {page}: {'ok' if not found else 'FAILED'} "
                  f"({imgs} image(s) loaded, {len(report['results'])} search result(s)); "
                  f"screenshot {shot}")
    finally:
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("site", help="the built HTML site (docs/_build/html)")
    p.add_argument("--screenshots", required=True, help="folder for the screenshots")
    p.add_argument("--chromium", help="the browser executable (default: chromium on the PATH)")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.site, "index.html")):
        print(f"check_site: no built site at {args.site} (build it first: "
              "python -m sphinx -W -b html docs docs/_build/html)", file=sys.stderr)
        return 2
    browser = find_browser(args.chromium)
    if browser is None:
        print("check_site: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    os.makedirs(args.screenshots, exist_ok=True)
    problems = check(args.site, args.screenshots, browser)
    for problem in problems:
        print(f"check_site: {problem}", file=sys.stderr)
    print(f"check_site: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
