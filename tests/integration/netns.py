"""The testbed fixture for integration tests; the network itself is ``trustmesh.testbed``.

Reuse: ``from netns import Testbed, testbed, ...`` (tests/integration is on sys.path in pytest's
default rootdir import mode).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustmesh.testbed import ATK_IP, DEV_IP, GW_ATK_IP, GW_DEV_IP, PEER_IP, Testbed, netns_unavailable

__all__ = ["ATK_IP", "DEV_IP", "GW_ATK_IP", "GW_DEV_IP", "PEER_IP", "Testbed", "netns_unavailable", "testbed"]


@pytest.fixture()
def testbed() -> Iterator[Testbed]:
    """A fresh three-namespace network; skipped with the reason when namespaces cannot be made."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    bed = Testbed()
    bed.up()
    try:
        yield bed
    finally:
        bed.close()
