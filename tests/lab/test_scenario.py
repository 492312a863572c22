"""Scenario files: the shipped ones load; bad files get one error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.errors import InputError
from trustmesh.lab import ATTACK_KINDS, list_scenarios, load_scenario, parse_scenario

GOOD = """\
name: tiny
duration: [20, 30]
hosts:
  - {name: hub, role: server, services: [ssh, http]}
  - {name: box, role: iot, count: [1, 3]}
  - {name: bad, role: attacker}
benign:
  - {kind: http-browsing, from: box, to: hub}
attacks:
  - {kind: port-scan, variant: [syn, udp], from: bad, to: hub, at: [2, 5]}
"""


def test_shipped_scenarios_cover_every_attack_kind_and_a_benign_only_site() -> None:
    shipped = list_scenarios()
    kinds = {a.kind for s in shipped.values() for a in s.attacks}
    assert kinds == set(ATTACK_KINDS)
    assert any(not s.attacks and s.benign for s in shipped.values())
    mixed = shipped["iot-site"]
    assert len({a.kind for a in mixed.attacks}) >= 5 and mixed.benign
    for s in shipped.values():  # runs stay 60-120 s; benign-only ones >= 90 s so baselines can learn
        lo, hi = s.duration if isinstance(s.duration, tuple) else (s.duration, s.duration)
        assert 60 <= lo <= hi <= 120
        if not s.attacks:
            assert lo >= 90


def test_parse_good_scenario_and_load_by_path(tmp_path: Path) -> None:
    s = parse_scenario(GOOD, "tiny.yaml")
    assert s.name == "tiny" and s.attacks[0].variants == ("syn", "udp")
    assert s.hosts[2].where == "outside" and s.hosts[1].where == "lan"
    p = tmp_path / "tiny.yaml"
    p.write_text(GOOD)
    assert load_scenario(p) == s


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD.replace("role: iot", "role: toaster"), "x.yaml:5: hosts[1].role"),
        (GOOD.replace("variant: [syn, udp]", "variant: [syn, xmas]"), "x.yaml:10: attacks[0]"),
        (GOOD.replace("to: hub, at", "to: nowhere, at"), "x.yaml:10: attacks[0].to: unknown host 'nowhere'"),
        (GOOD.replace("from: box, to: hub", "from: box, to: box"), "x.yaml:8: benign[0].to: http-browsing needs"),
        (GOOD.replace("duration: [20, 30]", "duration: [20, 3000]"), "x.yaml:2: duration"),
        (GOOD.replace("at: [2, 5]", "at: [5, 2]"), "x.yaml:10: attacks[0].at"),
        (GOOD.replace("at: [2, 5]", "at: [2, 25]"), "x.yaml:10: attacks[0].at: starts at 25 s, not before"),
        (GOOD.replace("count: [1, 3]", "count: [1, 3], colour: red"), "x.yaml:5: hosts[1].colour"),
        (GOOD + "  - {kind: brute-force, variant: mqtt, from: bad, to: hub, at: 3}\n", "attacks[1].to: brute-force (mqtt) needs"),
        ("name: x\nhosts: [\n", "x.yaml:3: not valid YAML"),
        ("- just\n- a list\n", "x.yaml: a scenario is a YAML mapping"),
    ],
)
def test_bad_scenarios_name_file_line_and_field(text: str, where: str) -> None:
    with pytest.raises(InputError) as err:
        parse_scenario(text, "x.yaml")
    assert where in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(InputError, match="not a shipped scenario.*iot-site"):
        load_scenario("no-such-scenario")
