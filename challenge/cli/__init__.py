"""``plateau``: the command line over the whole suite. ``plateau <command> --help`` explains each.

Every command resolves its track, loads the model, calls one library function and prints its
headline and where it wrote; its flags are the library's typed config (tyro), extended by
subclassing where the command needs more (the track, an output folder).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import tyro

from challenge.cli import baselines, interactions, protocols, studies, tracks
from challenge.cli import challenge as submissions
from challenge.errors import ChallengeError

COMMANDS: dict[str, Callable] = {
    "build": tracks.build,
    "tracks": tracks.tracks,
    "publish": tracks.publish,
    "download": tracks.download,
    "protocol": protocols.protocol,
    "generate": submissions.generate,
    "validate": submissions.validate,
    "score": submissions.score,
    "submit": submissions.submit,
    "verify-generator": submissions.verify_generator,
    "leaderboard": submissions.leaderboard,
    "rescore": submissions.rescore,
    "verify-records": submissions.verify_records,
    "score-seeds": submissions.score_seeds,
    "resolution": submissions.resolution,
    "attest-sae": submissions.attest_sae,
    "main": submissions.main,
    "train-sae": baselines.train_sae,
    "find-features": baselines.find_features,
    "diagnose-submissions": baselines.diagnose_submissions,
    "study-output-states": studies.study_output_states,
    "study-layers": studies.study_layers,
    "study-steering": studies.study_steering,
    "study-boundaries": studies.study_boundaries,
    "study-sae-plateaus": studies.study_sae_plateaus,
    "study-sae-collapse": studies.study_sae_collapse,
    "atlas": studies.atlas,
    "interactions": interactions.interactions,
    "interactions-circuit": interactions.interactions_circuit,
}


def main(argv: list[str] | None = None) -> None:
    """Run ``plateau`` with ``argv`` (default: ``sys.argv[1:]``); a bad input exits 2 with a
    one-line message."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        tyro.extras.subcommand_cli_from_dict(
            COMMANDS,
            args=argv,
            prog="plateau",
            description=__doc__.split("\n")[0],
            config=(tyro.conf.OmitArgPrefixes,),
        )
    except ChallengeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
