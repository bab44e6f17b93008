"""A minimal W3C WebDriver client (chromedriver + Debian's chromium, headless) for the console tests.

Only what the tests use: open a page, find elements by CSS, type, click, read text and source, run a
script (sync or async), size the window, take a screenshot. Plain urllib JSON: no browser-automation
package needed."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB = "\ue004"  # WebDriver's key codes
ENTER = "\ue007"


def available() -> bool:
    return CHROMIUM is not None and CHROMEDRIVER is not None


class WebDriverError(Exception):
    pass


class Browser:
    def __init__(self) -> None:
        assert CHROMEDRIVER and CHROMIUM
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["value"]["ready"]:
                    break
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)  # polling a starting process with a hard deadline
        options = {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["value"]["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise WebDriverError(exc.read().decode("utf-8", "replace")) from None

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)["value"]

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._s("GET", "/url"))

    def wait_url(self, suffix: str, timeout: float = 15.0) -> None:
        """A click that submits a form returns before the next page has loaded: wait for it.

        The path must end with ``suffix``'s path and the query must equal its query exactly: the sign-in
        page carries where it goes next in its own query (``/console/login?next=/console/...``), so a
        plain "URL ends with" would match the page being left. Then wait until the page has loaded."""
        want_path, _, want_query = suffix.partition("?")
        deadline = time.monotonic() + timeout
        while True:
            current = urllib.parse.urlsplit(self.url)
            if current.path.endswith(want_path) and current.query == want_query:
                if self.script("return document.readyState") == "complete":
                    return
            if time.monotonic() > deadline:
                raise WebDriverError(f"still at {self.url}, expected ...{suffix}")
            time.sleep(0.05)  # polling the browser with a hard deadline

    def wait_for(self, css: str, timeout: float = 15.0) -> None:
        """A form posted back to the same URL: wait for an element of the next page instead."""
        deadline = time.monotonic() + timeout
        while not self.find_all(css):
            if time.monotonic() > deadline:
                raise WebDriverError(f"no {css} at {self.url}")
            time.sleep(0.05)  # polling the browser with a hard deadline

    def find(self, css: str) -> str:
        return str(self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self._s("POST", "/elements", {"using": "css selector", "value": css})]

    def type(self, css: str, text: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return str(self._s("GET", f"/element/{self.find(css)}/text"))

    def keys(self, *texts: str) -> None:
        """Press keys on whatever has the focus, as a keyboard would (``TAB``, ``ENTER`` or text)."""
        actions = []
        for text in texts:
            for key in text:
                actions += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self._s("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def focused(self) -> dict[str, Any]:
        """The element with the focus: its id, tag, text, accessible label and outline style."""
        return dict(
            self.script(
                "const e = document.activeElement;"
                "const label = e.labels && e.labels.length ? e.labels[0].innerText : '';"
                "return {id: e.id, tag: e.tagName.toLowerCase(), text: (e.innerText || '').trim(),"
                " label: label || e.getAttribute('aria-label') || '',"
                " outline: getComputedStyle(e).outlineStyle};"
            )
        )

    def source(self) -> str:
        return str(self._s("GET", "/source"))

    def script(self, code: str) -> Any:
        return self._s("POST", "/execute/sync", {"script": code, "args": []})

    def script_async(self, code: str) -> Any:
        """Run ``code`` with its callback as the last argument (``arguments[arguments.length - 1]``)."""
        return self._s("POST", "/execute/async", {"script": code, "args": []})

    def frame(self, index: int | None) -> None:
        """Run what follows inside the page's ``index``-th frame (None: the top page again)."""
        self._s("POST", "/frame", {"id": index})

    def window_size(self, width: int, height: int) -> None:
        self._s("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        """The viewport as a PNG at ``path`` (its folder made as needed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))
        return path

    def cookies(self) -> list[dict[str, Any]]:
        return list(self._s("GET", "/cookie"))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)
