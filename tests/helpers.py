"""Helpers shared by test modules (no test module imports another)."""

from __future__ import annotations

from pathlib import Path

from headstart.checkpoint import Checkpointer


class Killed(Exception):
    """Stands for the SIGKILL of a training run, raised right after a chosen checkpoint is written."""


class DiesAfterSaving(Checkpointer):
    """Writes its checkpoint, then kills the run: the state on disk is exactly that checkpoint."""

    def __init__(self, location: Path, at: tuple[int, int]) -> None:
        super().__init__(location, "fp")
        self.at = at

    def save(self, *args, partial=None, **kw) -> None:
        super().save(*args, partial=partial, **kw)
        if partial is not None and (partial.epoch, partial.step) == self.at:
            raise Killed


# A page opened in headless Chromium: after `load`, this marks on <body> every <img> the browser could not
# decode (by its alt text) and every relative link whose target is missing is checked in Python on the DOM.
_PROBE = ("<script>window.addEventListener('load',()=>{const bad=[...document.images]"
          ".filter(i=>!i.complete||i.naturalWidth===0).map(i=>i.alt||i.src.slice(0,60));"
          "document.body.setAttribute('data-images',String(document.images.length));"
          "document.body.setAttribute('data-broken-images',JSON.stringify(bad));});</script>")


def chromium() -> str:
    """Debian's chromium (installed by `make chromium`, which `make test` runs)."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium is not installed: run `make chromium` (Debian package chromium)")
    return found


def browser_dom(page: Path, tmp: Path) -> str:
    """The DOM Chromium built from `page` (a copy beside it with the probe script, so relative links and
    images resolve as they would for the original), as --dump-dom prints it."""
    import subprocess

    html = page.read_text()
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(html.replace("</body>", _PROBE + "</body>") if "</body>" in html else html + _PROBE)
    try:
        out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000",
                              "--dump-dom", probe.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        probe.unlink()
    return out



def copy_store(src: Path, dst: Path) -> Path:
    """A copy of the folder `src` that holds a SQLite MLflow store (`mlflow.db`) with its artifacts and whatever
    else: the store's absolute paths (artifact locations, sources) are rewritten to point into the copy, so a
    test can register, promote and log in it without touching the template other tests copy."""
    import shutil
    import sqlite3

    shutil.copytree(src, dst, dirs_exist_ok=True)
    old, new = f"{src}/", f"{dst}/"
    with sqlite3.connect(dst / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for _, col, kind, *_ in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    db.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) WHERE instr("{col}", ?) > 0',
                               (old, new, old))
    return dst
