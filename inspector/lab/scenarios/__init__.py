"""The lab's attack scenarios, by name, and the benign background they mix with.

Each scenario (inspector.lab.scenarios.base.Scenario) tells one attack on ML infrastructure as
traffic: its steps, the MITRE ATLAS techniques it exercises, the rules expected to catch each
step, a capture builder and a live replay. Modules by target: `triton` (model server), `llm`,
`storage` (S3 model store), `training` (TCPStore, NCCL), `mlops` (Ray, TorchServe, MLflow,
Ollama, Feast); `benign` is the background traffic.
"""

from __future__ import annotations

from inspector.lab.scenarios import llm, mlops, storage, training, triton
from inspector.lab.scenarios.base import POLICY_SID, Scenario, Step

SCENARIOS: dict[str, Scenario] = {s.name: s for module in (triton, llm, storage, training, mlops)
                                  for s in module.SCENARIOS}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name` (KeyError naming the known ones otherwise)."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


__all__ = ["POLICY_SID", "SCENARIOS", "Scenario", "Step", "get_scenario"]
