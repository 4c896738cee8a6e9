"""Entry point *inside* the sandbox (``challenge.sandbox.run_sandboxed``): load the generator
file, fit it (``job["tier"]`` "rows": ``fit(SandboxTrack, None)`` on the sandbox's track view;
"statistics": ``fit(stats, sae)`` on the work folder's statistics artifact and SAE, the
sandbox holding no split), sample, and hand back through the two pipes named in
``job.json``: the sample as safetensors bytes (tensor ``activations``) on ``acts_fd``, then
``{"description": ...}`` on ``result_fd``; on any error ``{"error": <one line>}`` on
``result_fd`` (and the line on stderr), exit 1. Nothing is written to a file: the host never
opens a path the sandbox could have planted. Not imported by the library.

The generator runs in this process, so it can write to the pipes itself: the host treats all
it reads as untrusted (byte caps, strict parsing, checks)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

WORK = Path("/sandbox/work")


def _generator_class(module, class_name: str | None):
    classes = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if c.__module__ == module.__name__ and hasattr(c, "fit") and hasattr(c, "sample")
    ]
    if class_name is not None:
        classes = [c for c in classes if c.__name__ == class_name]
    if len(classes) != 1:
        names = [c.__name__ for c in classes]
        raise ValueError(
            f"the file must define exactly one class with fit and sample (found {names}); "
            "name it with --class-name"
        )
    return classes[0]


def _send(fd: int, data: bytes) -> None:
    """Write ``data`` to the pipe ``fd`` and close it."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def main() -> int:
    result_fd = None
    try:
        job = json.loads((WORK / "job.json").read_text())
        result_fd, acts_fd = int(job["result_fd"]), int(job["acts_fd"])
        tier = job.get("tier", "rows")
        if tier not in ("rows", "statistics"):
            raise ValueError(f"unknown tier {tier!r}")
        import torch
        from safetensors.torch import save

        spec = importlib.util.spec_from_file_location("submitted_generator", WORK / "generator.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["submitted_generator"] = module
        spec.loader.exec_module(module)
        gen = _generator_class(module, job.get("class_name"))()
        if tier == "statistics":
            from challenge.sae import load_sae
            from challenge.statistics import load_statistics

            gen.fit(load_statistics(WORK / "statistics"), load_sae(WORK / "sae"))
        else:
            from challenge.sandbox import SandboxTrack

            gen.fit(SandboxTrack(WORK), None)
        x = gen.sample(job["n"], seed=job["seed"])
        x = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous()
        desc = getattr(gen, "description", None) or (type(gen).__doc__ or "").strip()
        desc = " ".join(str(desc).split())[:2000]
        _send(acts_fd, save({"activations": x}))
        _send(result_fd, json.dumps({"description": desc}).encode())
        return 0
    except BaseException as e:  # noqa: BLE001 - everything the generator raises is reported
        line = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        try:
            if result_fd is not None:
                _send(result_fd, json.dumps({"error": line}).encode())
        except OSError:
            pass
        finally:
            print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
