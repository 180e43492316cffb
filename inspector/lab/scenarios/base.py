"""What a lab scenario is: its story, ATLAS techniques, attack steps with the rules expected to catch each,
how it is put on the wire (a capture) and how it is sent live (a replay)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inspector.lab.truth import TruthScenario, TruthStep

if TYPE_CHECKING:
    from inspector.lab.recorder import Lab
    from inspector.lab.replay import Replay

#: Sid of the segmentation-policy rule (signatures/policy/): alerts on flows the lab policy denies.
POLICY_SID = 4600001


@dataclass(frozen=True, kw_only=True)
class Step:
    """One thing the attacker does, and the sids that should detect it (shipped pack, lab site config);
    `policy` adds the policy rule's sid when the lab policy is loaded (the step opens a denied flow)."""

    id: str
    description: str
    sids: tuple[int, ...] = ()
    policy: bool = False

    def truth(self) -> TruthStep:
        return TruthStep(id=self.id, description=self.description, sids=self.sids,
                         policy_sids=(POLICY_SID,) if self.policy else ())


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """A named attack: `build(lab, start)` writes it into a capture (recording its truth),
    `replay(replay)` sends it live over the transports in `transports` (http, grpc, tcp)."""

    name: str
    title: str
    description: str
    atlas: tuple[str, ...]
    steps: tuple[Step, ...]
    build: Callable[[Lab, float], None]
    replay: Callable[[Replay], None]
    transports: tuple[str, ...]
    #: Seconds of traffic `build` makes (where a capture of a given duration can place it).
    span: float
    cves: tuple[str, ...] = ()

    @property
    def sids(self) -> tuple[int, ...]:
        """Every sid a step expects (without the policy rule), in order of first mention."""
        return tuple(dict.fromkeys(s for step in self.steps for s in step.sids))

    def truth(self) -> TruthScenario:
        return TruthScenario(name=self.name, title=self.title, atlas=self.atlas, cves=self.cves,
                             steps=tuple(step.truth() for step in self.steps))
