"""Admission rules (token buckets, address lists) and the agent's reconnect backoff."""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.agent.main import Backoff
from app.agent_server.admission import TokenBuckets, address_allowed
from app.agent_server.config import AgentServerSettings
from tests.agents.support import CLUSTERPORT


def test_token_bucket_admits_a_burst_then_asks_to_wait() -> None:
    buckets = TokenBuckets(rate=0.5, burst=3)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a")
    assert 0 < wait <= 2.0  # one token per two seconds
    assert buckets.take("b") == 0.0  # keys are independent


def test_token_buckets_stay_bounded_in_number_of_keys() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=100)
    for i in range(1000):
        buckets.take(f"key-{i}")
    assert len(buckets._buckets) == 100


def test_address_lists_deny_wins_and_allow_restricts() -> None:
    net = ipaddress.ip_network
    assert address_allowed("10.1.2.3", [], [])
    assert not address_allowed("10.1.2.3", [], [net("10.0.0.0/8")])
    assert not address_allowed("10.1.2.3", [net("10.0.0.0/8")], [net("10.1.0.0/16")])
    assert address_allowed("10.2.0.1", [net("10.0.0.0/8")], [net("10.1.0.0/16")])
    assert not address_allowed("192.168.0.1", [net("10.0.0.0/8")], [])
    # IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    assert not address_allowed("::ffff:10.1.2.3", [], [net("10.0.0.0/8")])
    assert not address_allowed("not-an-address", [], [])


def test_address_lists_are_read_from_comma_separated_settings() -> None:
    settings = AgentServerSettings(agent_ip_allow="10.0.0.0/8, 192.168.1.7", agent_ip_deny="")
    assert settings.agent_ip_allow == [
        net for net in map(ipaddress.ip_network, ["10.0.0.0/8", "192.168.1.7/32"])
    ]
    assert settings.agent_ip_deny == []


def test_decorrelated_jitter_backoff_spreads_and_is_capped() -> None:
    # Seeded: capped delays repeat, so a count of distinct draws only holds for known draws.
    backoff = Backoff(base=0.5, cap=30, rng=random.Random(1234))
    delays = [backoff.next() for _ in range(200)]
    assert all(0.5 <= d <= 30 for d in delays)
    assert max(delays) == 30  # grows to the cap under repeated failures
    assert len({round(d, 6) for d in delays[:20]}) > 10  # jittered, not lockstep
    backoff.reset()
    assert backoff.next() <= 1.5  # after a good connection it starts small again


def test_backoff_properties_hold_for_every_seed() -> None:
    """Properties that do not depend on the draw: bounds, growth limit, reset."""
    for seed in range(200):
        backoff = Backoff(base=0.5, cap=30, rng=random.Random(seed))
        previous = 0.5
        for _ in range(50):
            delay = backoff.next()
            assert 0.5 <= delay <= min(30, previous * 3)
            previous = delay
        backoff.reset()
        assert backoff.next() <= 1.5


def test_agents_restarted_together_do_not_reconnect_in_lockstep() -> None:
    """Many agents failing at once spread their first retries (independent generators)."""
    firsts = [Backoff(base=0.5, cap=30, rng=random.Random(seed)).next() for seed in range(100)]
    assert max(firsts) - min(firsts) > 0.5


def test_the_agent_refuses_plain_ws_unless_told_it_is_a_test_setup(tmp_path: Path) -> None:
    from app.agent.config import AgentSettings

    token = tmp_path / "token"
    token.write_text("cpa_x")
    env = {
        "PATH": os.environ["PATH"],
        "CLUSTERPORT_AGENT_SERVER_URL": "ws://127.0.0.1:9/agent/connect",
        "CLUSTERPORT_AGENT_TOKEN_FILE": str(token),
        "CLUSTERPORT_AGENT_KUBECONFIG": str(tmp_path / "missing"),
    }
    result = subprocess.run(
        [CLUSTERPORT, "agent"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "CLUSTERPORT_AGENT_ALLOW_INSECURE" in result.stderr
    AgentSettings(server_url="ws://127.0.0.1:9/", allow_insecure=True).check_transport()
    AgentSettings(server_url="wss://agent.example.com/").check_transport()
    with pytest.raises(ValidationError):
        AgentSettings(server_url="http://agent.example.com/")
