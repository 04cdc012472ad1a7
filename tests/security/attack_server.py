"""Run crafted checkpoints through ``load_model`` and ``ultrasam info``, each in its own process.

Usage: ``python attack_server.py CORPUS_DIR MARKER_DIR``. Imports torch and ultrasam once, warms
every lazy import on a harmless checkpoint (so that whatever a crafted file makes Python import
shows up), then forks one child per file in ``CORPUS_DIR``. Each child caps its address space
(``resource.setrlimit``), loads the file both ways and reports: exit code and stderr of
``ultrasam info``, the exception of ``load_model``, modules newly imported, peak RSS growth and
time. One JSON object per file goes to stdout. Nothing here decides pass or fail: the test does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
from pathlib import Path

from ultrasam import cli
from ultrasam.weights.checkpoints import checkpoint_info, load_model

ADDRESS_SPACE_HEADROOM = 1536 << 20  # bytes the child may map beyond what it inherits


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _attack(path: Path) -> dict:
    before = set(sys.modules)
    start = time.monotonic()
    result: dict = {"name": path.name}
    try:
        model = load_model(path)
        result["load"] = {"ok": True, "parameters": sum(p.numel() for p in model.parameters())}
        del model
    except BaseException as e:  # noqa: BLE001 - the test judges the type
        result["load"] = {"ok": False, "type": type(e).__name__,
                          "mro": [c.__name__ for c in type(e).__mro__],
                          "message": str(e)}
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(["info", str(path)])
        except SystemExit as e:
            rc = int(e.code or 0)
        except BaseException as e:  # noqa: BLE001 - reported, judged by the test
            rc, result["info_exception"] = -1, f"{type(e).__name__}: {e}"
    result["info"] = {"rc": rc, "stderr": err.getvalue()}
    result["seconds"] = time.monotonic() - start
    result["new_modules"] = sorted(set(sys.modules) - before)
    return result


def main() -> None:
    corpus, markers = Path(sys.argv[1]), Path(sys.argv[2])
    warm = corpus.parent / "warm"
    # Lazy imports of the legitimate paths happen here, not inside the children.
    for entry in sorted(warm.iterdir()):
        load_model(entry)
        checkpoint_info(entry)
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["info", str(next(iter(sorted(warm.iterdir()))))])
    # zipfile decodes record names without the UTF-8 flag (not set by every zip writer) with
    # this stdlib codec, imported on first use.
    import encodings.cp437  # noqa: F401
    base_rss = _rss_kib()
    for path in sorted(corpus.iterdir()):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: cap memory, attack, report, exit without cleanup handlers
            os.close(read_fd)
            try:
                cap = _vm_size() + ADDRESS_SPACE_HEADROOM
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
                report = _attack(path)
                report["rss_growth_mib"] = (_rss_kib() - base_rss) / 1024
            except BaseException as e:  # noqa: BLE001 - reported as a crash
                report = {"name": path.name, "crash": f"{type(e).__name__}: {e}"}
            with os.fdopen(write_fd, "w") as f:
                f.write(json.dumps(report))
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            text = f.read()
        _, status = os.waitpid(pid, 0)
        report = json.loads(text) if text else {"name": path.name,
                                                 "crash": f"child status {status}"}
        report["markers"] = sorted(p.name for p in markers.iterdir())
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
