"""The scaling ceiling benchmarks/bench_processes.py prints beside its speed-up: the most N
sidecar processes could give on the machine's cores at the CPU per request one process's run
measured, bound by the processes (one core each) or by the whole machine."""

from __future__ import annotations

import math

import pytest

from benchmarks.bench_processes import scaling_ceiling


def test_a_sidecar_alone_on_the_machine_scales_with_its_processes():
    # 500 req/s, the sidecar one full core, nothing else busy: 2 processes on 4 cores -> 2x
    sidecar_ms, rest_ms, ceiling = scaling_ceiling(500, 25.0, 1.0, 4, 2)
    assert (sidecar_ms, rest_ms) == pytest.approx((2.0, 0.0))
    assert ceiling == pytest.approx(2.0)


def test_the_rest_of_the_machine_caps_it():
    # 400 req/s: the sidecar 1 core (2.5 ms/req), everything else 0.2 cores (0.5 ms/req) of 2 cores busy 60%
    sidecar_ms, rest_ms, ceiling = scaling_ceiling(400, 60.0, 1.0, 2, 2)
    assert (sidecar_ms, rest_ms) == pytest.approx((2.5, 0.5))
    assert ceiling == pytest.approx((2 / 0.003) / 400)  # 2 cores / 3 ms per request, against 400 req/s
    assert ceiling < 2


def test_no_requests_gives_no_ceiling():
    assert all(math.isnan(value) for value in scaling_ceiling(0, 50.0, 1.0, 2, 2))
