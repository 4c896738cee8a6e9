"""``plateau``: the command line over the whole suite. ``plateau <command> --help`` explains each.

Every command resolves its track, loads the model, calls one library function and prints its
headline and where it wrote; its flags are the library's typed config (tyro), extended by
subclassing where the command needs more (the track, an output folder).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable

import tyro

from challenge.cli import baselines, interactions, protocols, studies, tracks
from challenge.cli import challenge as submissions
from challenge.errors import ChallengeError

COMMANDS: dict[str, Callable] = {
    "build": tracks.build,
    "build-statistics": tracks.build_statistics,
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
    "publish-reference": submissions.publish_reference,
    "verify-records": submissions.verify_records,
    "extend-records": submissions.extend_records,
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
    "study-training": studies.study_training,
    "study-error-correction": studies.study_error_correction,
    "atlas": studies.atlas,
    "interactions": interactions.interactions,
    "interactions-circuit": interactions.interactions_circuit,
}


RESUMABLE = frozenset(
    {"main", "score", "submit", "score-seeds", "atlas"} | {c for c in COMMANDS if c[:6] == "study-"}
)
"""Commands that an interrupted run's rerun resumes from the caches (features per context round,
engine chunks, the track, the SAE)."""


def interrupted_line(args: list[str]) -> str:
    """What ``plateau <args>`` says on stderr when interrupted (Ctrl-C): for a command of
    :data:`RESUMABLE`, the command line to run again."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in RESUMABLE:
        return "interrupted"
    return "interrupted; run the same command again to resume from the caches: " + shlex.join(
        ["plateau", *args]
    )


def main(argv: list[str] | None = None) -> None:
    """Run ``plateau`` with ``argv`` (default: ``sys.argv[1:]``); a bad input exits 2 with a
    one-line message, an interrupt (Ctrl-C) exits 130 with one line saying how to resume."""
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
    except KeyboardInterrupt:
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # an engine bar may hold the line
        args = sys.argv[1:] if argv is None else list(argv)
        print(clear + interrupted_line(args), file=sys.stderr)
        raise SystemExit(130) from None
