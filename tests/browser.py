"""Look at built book pages in a real browser: headless Chromium driven over the DevTools protocol.

    python tests/browser.py _build/html [--shots _build/screenshots]

For every page and every width (1400 px, a desktop; 400 px, a phone) it reports horizontal overflow of
the page (the document wider than the window), images that did not load or render, and a figure shown as
text (``<Figure size ...>``), and saves a screenshot. Used by ``tests/test_book.py`` after the build.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

WIDTHS = (1400, 400)
#: what the page is asked, in the browser: sizes, broken images, figures left as text
PROBE = """(() => {
  const doc = document.documentElement;
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);
  const wide = [...document.querySelectorAll('article *')].filter(e => {
      const r = e.getBoundingClientRect(); return r.right > window.innerWidth + 1 && r.width > 0;
  }).slice(0, 3).map(e => e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''));
  return JSON.stringify({scroll: doc.scrollWidth, inner: window.innerWidth, broken: broken,
                         figureText: document.body.innerText.includes('<Figure size'), wide: wide});
})()"""


def chromium() -> str | None:
    """The Chromium executable, or None (Debian's package installs /usr/bin/chromium)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@contextmanager
def browser(executable: str) -> Iterator[int]:
    """A headless Chromium with its DevTools port (closed offline-friendly: no background networking)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
                                 "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or len(port_file.read_text().split()) < 2:  # port, then the path
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Chromium ({executable}) did not open its DevTools port within 30 s.")
                time.sleep(0.1)
            yield int(port_file.read_text().split()[0])
        finally:  # Chromium's helper processes too: they write into the profile folder until they die
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(0.2)


class Tab:
    """One browser tab spoken to over its DevTools websocket."""

    def __init__(self, port: int):
        import websocket  # websocket-client

        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        target = json.load(urllib.request.urlopen(request, timeout=30))
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def load(self, url: str, width: int, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)  # a narrow window: the viewport meta tag cannot zoom the page out to fit
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
            if state.get("result", {}).get("value") == "complete":
                break
            time.sleep(0.1)
        time.sleep(0.3)  # web fonts and layout settle

    def probe(self) -> dict:
        result = self.call("Runtime.evaluate", expression=PROBE, returnByValue=True)
        return json.loads(result["result"]["value"])

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()


def check_pages(html: Path, pages: list[str], shots: Path | None = None,
                widths: tuple[int, ...] = WIDTHS, executable: str | None = None) -> list[str]:
    """Problems found on the built ``pages`` (paths under ``html`` without ``.html``), one sentence each."""
    executable = executable or chromium()
    if executable is None:
        raise RuntimeError("No Chromium found: install Debian's chromium package (.ci/run does).")
    problems = []
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    with browser(executable) as port:
        tab = Tab(port)
        try:
            for page in pages:
                for width in widths:
                    tab.load((html / f"{page}.html").resolve().as_uri(), width)
                    seen = tab.probe()
                    where = f"{page} at {width} px"
                    if seen["scroll"] > seen["inner"] + 1:
                        problems.append(f"{where}: the page is {seen['scroll']} px wide, wider than the "
                                        f"{seen['inner']} px window (first wide elements: {seen['wide']})")
                    if seen["broken"]:
                        problems.append(f"{where}: {len(seen['broken'])} image(s) did not render: "
                                        f"{seen['broken'][:3]}")
                    if seen["figureText"]:
                        problems.append(f"{where}: a figure is shown as text ('<Figure size ...>')")
                    if shots:
                        tab.screenshot(shots / f"{page.replace('/', '_')}-{width}px.png")
        finally:
            tab.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the built book's html folder")
    parser.add_argument("--shots", type=Path, help="save a screenshot of every page and width here")
    parser.add_argument("pages", nargs="*", help="pages without .html (default: every .html under book/)")
    args = parser.parse_intermixed_args()
    pages = args.pages or sorted(str(p.relative_to(args.html).with_suffix(""))
                                 for p in (args.html / "book").glob("*.html"))
    problems = check_pages(args.html, pages, args.shots)
    print("\n".join(problems) or f"{len(pages)} pages x {len(WIDTHS)} widths: no problem")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
