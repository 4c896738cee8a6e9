"""Name the SAE behind board records made before submissions named theirs (docs/scoring.md,
"The SAE is challenge data"). For each record of an SAE-using in-repo generator whose
``submission.json`` has no ``sae`` field, the generator is run again (same seed, the track's
SAE as ``track_sae`` / ``track_e2e_sae`` load it now) into a scratch folder; only when its
activations equal the committed submission's **bit for bit** is the SAE's name and checksum
written into the committed ``submission.json`` and the record's ``submission``. Anything else
is reported and left alone.

    python benchmarks/attest_sae.py [--track smollm2-135m-l1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from baselines.generators import GENERATORS
from challenge.models import load_model
from challenge.results import to_jsonable
from challenge.submission import generate, read_submission
from challenge.track import resolve_track


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track", default="smollm2-135m-l1")
    ap.add_argument("--board", type=Path, default=Path("leaderboard"))
    ap.add_argument("--submissions", type=Path, default=Path("submissions"))
    a = ap.parse_args()
    track = resolve_track(a.track)
    lm = load_model(track.spec.model)
    tid = track.spec.track_id
    for record in sorted((a.board / tid).glob("*.json")):
        folder = a.submissions / tid / record.stem
        meta_path = folder / "submission.json"
        if not meta_path.exists() or record.stem not in GENERATORS:
            continue
        meta, acts = read_submission(folder)
        if "sae" not in meta["uses"] or "sae" in meta:
            continue
        gen = GENERATORS[record.stem]()
        if "sae" in getattr(gen, "access", ()):
            from challenge.sae import track_sae

            track_sae(track, lm=lm)
        with tempfile.TemporaryDirectory() as tmp:
            again = generate(gen, track, lm, seed=meta["seed"], out_root=Path(tmp))
            new_meta, new_acts = read_submission(again)
        same = new_acts.dtype == acts.dtype and torch.equal(new_acts, acts)
        if not same or "sae" not in new_meta:
            diff = (new_acts - acts).abs().max().item() if new_acts.shape == acts.shape else None
            print(f"{record.stem}: NOT attested (max abs difference {diff}); left as it is")
            continue
        doc = json.loads(meta_path.read_text())
        doc["sae"] = new_meta["sae"]
        meta_path.write_text(json.dumps(doc, indent=1))
        rec = json.loads(record.read_text())
        rec["submission"]["sae"] = new_meta["sae"]
        record.write_text(json.dumps(to_jsonable(rec), indent=1))
        print(f"{record.stem}: attested {new_meta['sae']['name']} {new_meta['sae']['sha256'][:12]}")


if __name__ == "__main__":
    main()
