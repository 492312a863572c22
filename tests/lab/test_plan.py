"""Seeds: the same seed gives the same plan; different seeds move addresses, counts, ports, timing, options."""

from __future__ import annotations

import ipaddress

import pytest

from trustmesh.lab import list_scenarios, load_scenario, plan_scenario

SEEDS = range(7, 27)  # tests' own seeds: never the held-out ones (>= 100)


def test_same_seed_same_plan() -> None:
    s = load_scenario("iot-site")
    assert plan_scenario(s, 7).to_dict() == plan_scenario(s, 7).to_dict()


def test_seed_varies_address_plan_counts_ports_timing_and_options() -> None:
    s = load_scenario("iot-site")
    plans = [plan_scenario(s, seed) for seed in SEEDS]
    assert len({p.lan for p in plans}) == len(plans)  # a new LAN every seed
    assert len({p.lan.split("/")[1] for p in plans}) > 1
    assert {ipaddress.ip_network(p.lan).network_address.packed[0] for p in plans} == {10, 172}
    assert len({len(p.hosts) for p in plans}) > 1
    assert len({p.host("hub").services["ssh"] for p in plans}) > 1
    assert len({p.host("hub").services["http"] for p in plans}) > 1
    assert len({p.duration for p in plans}) > 1
    assert len({p.attacks[0].at for p in plans}) > 1
    assert len({" ".join(p.attacks[0].argv) for p in plans}) == len(plans)
    assert len({p.attacks[0].variant for p in plans}) > 1
    assert len({p.user for p in plans}) > 1


@pytest.mark.parametrize("name", sorted(list_scenarios()))
def test_every_plan_stays_inside_its_subnets_and_is_bounded(name: str) -> None:
    s = load_scenario(name)
    for seed in (7, 8):
        p = plan_scenario(s, seed)
        lan, out = ipaddress.ip_network(p.lan), ipaddress.ip_network(p.outside)
        assert not lan.overlaps(out)
        assert all(n.is_private for n in (lan, out))
        ips = [h.ip for h in p.hosts] + [p.lan_gateway, p.outside_gateway]
        assert len(set(ips)) == len(ips)
        for h in p.hosts:
            assert ipaddress.ip_address(h.ip) in (lan if h.zone == "lan" else out)
        for a in p.attacks:
            assert a.timeout <= 120 and a.at < p.duration
            if a.tool == "hping3":  # floods are always bounded by a packet count
                assert "-c" in a.argv and "--flood" not in a.argv
            for t in a.targets:
                assert ipaddress.ip_network(t).subnet_of(lan) or ipaddress.ip_network(t).subnet_of(out)
            assert a.attacker not in a.victims


def test_plan_json_leaves_out_the_lab_password() -> None:
    p = plan_scenario(load_scenario("brute-force"), 7)
    assert p.password not in str(p.to_dict())
    assert p.password in str(p.to_dict(secrets=True))


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="seed must be >= 0"):
        plan_scenario(load_scenario("port-scan"), -1)
