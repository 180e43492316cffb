"""Evaluation of rules against the lab's ground truth, and the detection-tuning report.

    captures + truth files (inspector.lab) --run.py--> EVE records per capture (offline pipeline)
        --match.py--> each alert matched to a labelled flow and transaction
        --score.py--> per rule / per scenario / overall TP, FP, FN, TN, precision, recall, time to detection
        --report.py--> report.md, report.html (charts.py: matplotlib, embedded), report.json

`inspector eval` (cli.py) runs one rule set, or two to compare (before/after tuning). The
matching and scoring rules are stated in match.py and score.py and in docs/lab.md.
"""

from inspector.eval.match import Match, TruthIndex
from inspector.eval.run import RuleSetSpec, evaluate, pair_truths
from inspector.eval.score import CaptureRun, Evaluation, score

__all__ = ["CaptureRun", "Evaluation", "Match", "RuleSetSpec", "TruthIndex", "evaluate", "pair_truths", "score"]
