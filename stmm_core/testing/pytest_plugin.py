"""pytest fixtures for stmm and its plug-ins (registered through the ``pytest11`` entry point).

``hub_server``: a started :class:`~stmm_core.testing.hub_server.HubServer` on 127.0.0.1, stopped after the test.
``hub_client``: the server plus this process's ``huggingface_hub`` pointed at it (endpoint, a fresh cache under
the test's tmp folder, online, no Xet, ``HF_TOKEN`` set to the server's token); its ``env`` is the matching
environment for subprocesses::

    def test_my_encoder_from_the_hub(hub_client):
        hub, env = hub_client.server, hub_client.env
        hub.create_repo("org/tiny", files={...})
        ...   # timm.create_model("hf-hub:org/tiny", pretrained=True) now downloads from the loopback server
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stmm_core.testing.hub_server import HubServer


@dataclass
class HubClient:
    server: HubServer
    env: dict[str, str]


@pytest.fixture
def hub_server():
    """A loopback Hub for this test (download and upload endpoints, commits, gated/private repos)."""
    with HubServer() as hub:
        yield hub


@pytest.fixture
def hub_client(hub_server, monkeypatch, tmp_path):
    """:func:`hub_server` with ``huggingface_hub`` in this process (and ``env`` for subprocesses) pointed at it."""
    env = hub_server.activate(monkeypatch, tmp_path / "hf-home")
    return HubClient(hub_server, env)
