"""The challenge's scoring: the one home of how a submission becomes a ranked record.

::

    folder --validation.validate_submission (once: metadata + activations, copy check explicit)
           --> ValidatedSubmission
    ValidatedSubmission + track (challenge.track.TrackLike: splits, required_n, reference and
           oracle halves, checksum) --probing (engine)--> per-point features
           --classifier (cross-fitted two-sample test)--> ScoreReport (+ typed ScoreArrays)
    ScoreReport --recording.write_record (once)--> leaderboard/<track>/<name>.json|.npz|.png
           --board (ranking: paired bootstrap differences)--> README.md / index.html

Modules: ``config`` (ScoreConfig, versions), ``validation`` (+ ``copycheck``), ``probing``
(slots, feature cache), ``classifier`` (the two-sample test), ``report`` (ScoreReport and the
one loader of stored records), ``recording`` (score, record, rescore), ``ranking``, ``board``
(the leaderboard renderer), ``seeds`` (several scorer seeds, the resolution table) and
``attest`` (naming the SAE behind older records).
"""

from challenge.scoring.config import (
    BOARD_ROOT,
    FEATURES_VERSION,
    SCHEMA_ID,
    SCORER_VERSION,
    ClassifierConfig,
    ScoreConfig,
)
from challenge.scoring.recording import (
    record,
    remake,
    rescore,
    score_folder,
    score_points,
    score_submission,
    submit,
    write_record,
)
from challenge.scoring.report import ScoreArrays, ScoreReport, load_report, validate_report
from challenge.scoring.validation import (
    ValidatedSubmission,
    ValidationReport,
    validate_submission,
)

__all__ = [
    "BOARD_ROOT",
    "FEATURES_VERSION",
    "SCHEMA_ID",
    "SCORER_VERSION",
    "ClassifierConfig",
    "ScoreArrays",
    "ScoreConfig",
    "ScoreReport",
    "ValidatedSubmission",
    "ValidationReport",
    "load_report",
    "record",
    "remake",
    "rescore",
    "score_folder",
    "score_points",
    "score_submission",
    "submit",
    "validate_report",
    "validate_submission",
    "write_record",
]
