"""Entry point *inside* the sandbox (``challenge.sandbox.run_sandboxed``): load the generator
file, fit it on the sandbox's track view, sample, write ``activations.safetensors``; on any
error write one line to ``error.txt`` and exit 1. Not imported by the library."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

WORK, OUT = Path("/sandbox/work"), Path("/sandbox/out")


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


def main() -> int:
    try:
        import torch
        from safetensors.torch import save_file

        from challenge.sandbox import SandboxTrack

        job = json.loads((WORK / "job.json").read_text())
        spec = importlib.util.spec_from_file_location("submitted_generator", WORK / "generator.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["submitted_generator"] = module
        spec.loader.exec_module(module)
        gen = _generator_class(module, job.get("class_name"))()
        gen.fit(SandboxTrack(WORK), None)
        x = gen.sample(job["n"], seed=job["seed"])
        x = torch.as_tensor(x).detach().to("cpu", torch.float32).contiguous()
        save_file({"activations": x}, str(OUT / "activations.safetensors"))
        desc = getattr(gen, "description", None) or (type(gen).__doc__ or "").strip()
        (OUT / "result.json").write_text(json.dumps({"description": str(desc)[:2000]}))
        return 0
    except BaseException as e:  # noqa: BLE001 - everything the generator raises is reported
        line = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        try:
            (OUT / "error.txt").write_text(line)
        finally:
            print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
