"""A headless Chromium driven over the Chrome DevTools Protocol on a pipe: standard library only.

``--remote-debugging-pipe`` makes Chromium read protocol messages on its file descriptor 3 and
write them on 4, each a JSON object ended by a NUL byte. That needs no WebSocket client and no
port, so the browser tests need nothing but Debian's ``chromium`` and Python. One reader thread
sorts what arrives into replies (by id) and events (kept in order for ``events``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

# The flags this machine needs (no sandbox as root, no GPU) and the ones that keep Chromium off
# the network: without them it keeps calling Google's hosts, which a closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or a page script threw."""


class Browser:
    """One Chromium process with one page; ``call`` sends a command to that page."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def as_fds_3_and_4() -> None:  # runs in the child between fork and exec
            # Via fds above 4 first: either pipe end may already be 3 or 4, and dup2 onto the
            # same number would keep its close-on-exec flag.
            ends = (to_browser_read, from_browser_write)
            for number, fd in zip((3, 4), [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in ends]):
                os.dup2(fd, number)

        self._log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115 (closed in close)
        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=as_fds_3_and_4,
            close_fds=False,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._event_arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        # The page's workers (onnxruntime's) are held at their start until their network and
        # console are watched too, so what they fetch and log is among the events.
        self.call(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
        )

    def _read(self) -> None:
        buffer = b""
        with open(self._from_browser, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._dispatch(json.loads(message))
        with self._event_arrived:  # the browser went away: wake every waiter
            self._event_arrived.notify_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                waiting = self._replies.pop(message["id"], None)
            if waiting is not None:
                waiting.put(message)
            return
        if message.get("method") == "Target.attachedToTarget":
            # Answered on a thread of its own: this one reads the replies it waits for.
            session = message["params"]["sessionId"]
            threading.Thread(target=self._watch_worker, args=(session,), daemon=True).start()
        with self._event_arrived:
            self._events.append(message)
            self._event_arrived.notify_all()

    def _watch_worker(self, session: str) -> None:
        try:
            with contextlib.suppress(BrowserError, OSError):  # a worker may end at once
                for domain in ("Runtime", "Network"):
                    self._send(f"{domain}.enable", session=session)
        finally:  # whatever happened, the worker must not stay held at its start
            with contextlib.suppress(BrowserError, OSError):
                self._send("Runtime.runIfWaitingForDebugger", session=session)

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None):
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            reply: queue.Queue[dict[str, Any]] = queue.Queue(1)
            self._replies[ident] = reply
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=self.timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer within {self.timeout:g} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._send(method, params, self._session)

    def events(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every event called ``method`` so far, oldest first."""
        with self._event_arrived:
            return [e["params"] for e in self._events if e.get("method") == method]

    def clear_events(self) -> None:
        with self._event_arrived:
            self._events.clear()

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._event_arrived:
            while True:
                for event in self._events:
                    if event.get("method") == method:
                        return event["params"]
                left = deadline - time.monotonic()
                if left <= 0 or self._process.poll() is not None:
                    raise BrowserError(f"no {method} event within {timeout or self.timeout:g} s")
                self._event_arrived.wait(left)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.clear_events()
        self.call("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a page expression; a promise is awaited; a throw is BrowserError."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {})
            text = thrown.get("description") or thrown.get("value") or details.get("text")
            raise BrowserError(f"page script failed: {text}")
        return result["result"].get("value")

    def set_viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def screenshot(self) -> bytes:
        """The whole page as PNG bytes, not only the part in the viewport."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(data["data"])

    def set_file_input(self, selector: str, path: Path) -> None:
        """Choose ``path`` in the page's ``<input type=file>`` as a user would; fires change."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(path)]})

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):  # it may be gone already
            self._send("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        self._log.close()
