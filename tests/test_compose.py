"""docker-compose.yml describes a three-node Qdrant cluster and a spanrag service that uses
it (Docker does not run here: the file's structure is checked, and ``docker compose
config`` validates it where the compose plugin exists)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NODES = ("qdrant-1", "qdrant-2", "qdrant-3")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_three_qdrant_nodes_run_in_cluster_mode_with_their_own_volumes(compose):
    services = compose["services"]
    for node in NODES:
        service = services[node]
        assert service["image"].startswith("qdrant/qdrant:")
        assert service["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        (volume,) = service["volumes"]
        assert volume == f"{node}:/qdrant/storage" and node in compose["volumes"]
        assert f"http://{node}:6335" in service["command"]


def test_the_first_node_starts_the_cluster_and_the_others_join_it(compose):
    services = compose["services"]
    assert "--bootstrap" not in services["qdrant-1"]["command"]
    for node in NODES[1:]:
        command = services[node]["command"]
        assert command[command.index("--bootstrap") + 1] == "http://qdrant-1:6335"


def test_spanrag_uses_the_cluster_with_sharded_replicated_collections(compose):
    spanrag = compose["services"]["spanrag"]
    env = spanrag["environment"]
    settings = Settings(
        store=env["SPANRAG_STORE"],
        qdrant_url=env["SPANRAG_QDRANT_URL"],
        qdrant_shards=env["SPANRAG_QDRANT_SHARDS"],
        qdrant_replication=env["SPANRAG_QDRANT_REPLICATION"],
    )
    assert settings.store == "qdrant" and settings.qdrant_url == "http://qdrant:6333"
    for node in NODES:  # "qdrant" reaches any live node, not only the first
        assert "qdrant" in compose["services"][node]["networks"]["default"]["aliases"]
    assert settings.qdrant_shards == 6 and settings.qdrant_replication == 2
    assert set(NODES) <= set(spanrag["depends_on"])
    assert (ROOT / spanrag["build"] / "Dockerfile").is_file()


def test_spanrag_runs_with_keys_and_publishes_on_loopback_unless_told(compose):
    spanrag = compose["services"]["spanrag"]
    command = " ".join(spanrag["command"])
    assert "spanrag keys create" in command and "--if-none" in command and "--out /data/admin.key" in command
    assert "--allow-open" not in command
    (port,) = spanrag["ports"]
    assert port.startswith("${SPANRAG_PUBLISH:-127.0.0.1}:")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "spanrag keys create" in dockerfile and "--allow-open" not in dockerfile


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker CLI with the compose plugin on this machine",
)
def test_docker_compose_accepts_the_file():
    subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], check=True)
