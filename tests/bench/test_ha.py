"""The HA drill's arithmetic: unavailability is measured from the first failing observation of
a run of failures to the next good one."""

from __future__ import annotations

from k8semu.bench.ha import ha_config, unavailable_spans


def test_spans_run_from_the_first_failure_to_the_next_success() -> None:
    points = [(0.0, True), (1.0, False), (1.5, False), (2.0, True), (3.0, False), (3.25, True)]
    assert unavailable_spans(points) == [(1.0, 2.0), (3.0, 3.25)]


def test_a_failure_at_the_end_counts_until_the_last_observation() -> None:
    assert unavailable_spans([(0.0, True), (1.0, False), (4.0, False)]) == [(1.0, 4.0)]
    assert unavailable_spans([]) == []
    assert unavailable_spans([(0.0, True)]) == []


def test_the_drill_cluster_is_shaped_like_ha_yaml_on_ports_of_its_own() -> None:
    doc = ha_config()
    assert len(doc["store"]["members"]) == 3
    for section in ("apiServer", "scheduler", "controllerManager"):
        assert len(doc[section]["instances"]) == 2
    assert len(doc["nodes"]) == 3
    ports = [i["port"] for s in ("apiServer", "scheduler", "controllerManager")
             for i in doc[s]["instances"]]  # fmt: skip
    assert len(set(ports)) == 6 and 6443 not in ports
