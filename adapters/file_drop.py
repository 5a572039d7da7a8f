"""File drop: an inbox folder a platform (or an operator) puts export files into.

A file is taken only once its size has not changed for a settle time (it is no
longer being written). After it is taken in it moves to ``done/``, or to
``failed/`` if it could not be read, with ``<name>.report.json`` beside it. A
file that was taken in before a crash but not yet moved is recognised by its
content hash and moved without being taken in again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from credex.adapters.tables import SUFFIXES


class Inbox:
    def __init__(self, folder: Path, settle_seconds: float = 2.0) -> None:
        self.folder = folder
        self.done = folder / "done"
        self.failed = folder / "failed"
        self.settle_seconds = settle_seconds
        self._sizes: dict[Path, tuple[int, float]] = {}

    def ensure(self) -> None:
        for path in (self.folder, self.done, self.failed):
            path.mkdir(parents=True, exist_ok=True)

    def ready(self) -> list[Path]:
        """Files that have stopped growing, oldest first; anything else waits for the next look."""
        now = time.monotonic()
        ready = []
        present = set()
        for path in sorted(self.folder.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            present.add(path)
            size = path.stat().st_size
            seen = self._sizes.get(path)
            if seen is None or seen[0] != size:
                self._sizes[path] = (size, now)
            elif now - seen[1] >= self.settle_seconds:
                ready.append(path)
        for gone in set(self._sizes) - present:
            del self._sizes[gone]
        return ready

    def finish(self, path: Path, ok: bool, report: dict[str, Any]) -> Path:
        """Move a file to done/ or failed/ with its report beside it; never overwrite an earlier one."""
        target_dir = self.done if ok else self.failed
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{path.stem}.{int(time.time() * 1000)}{path.suffix}"
        (target_dir / f"{target.name}.report.json").write_text(
            json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        shutil.move(str(path), target)
        self._sizes.pop(path, None)
        return target
