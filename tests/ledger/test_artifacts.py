"""The committed contract artifacts equal a fresh compile with the pinned solc."""

from __future__ import annotations

import pytest

from contracts.build import (
    ARTIFACT_DIR,
    CONTRACTS,
    SOLC_VERSION,
    artifact_text,
    compile_sources,
    load_artifact,
    solc_available,
)


def test_artifacts_load_without_node():
    artifact = load_artifact("Federation")
    assert artifact["compiler"].startswith(SOLC_VERSION + "+")
    assert artifact["settings"]["evmVersion"] == "paris"
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 1000
    names = {e["name"] for e in artifact["abi"] if e["type"] == "event"}
    assert {"MemberAdmitted", "ConsentRegistered", "StatusListPublished"} <= names


@pytest.mark.skipif(not solc_available(), reason="needs node and node_modules/solc")
def test_committed_artifacts_match_a_fresh_compile():
    fresh = compile_sources()
    assert set(fresh) == set(CONTRACTS)
    for name, artifact in fresh.items():
        committed = (ARTIFACT_DIR / f"{name}.json").read_text("utf-8")
        assert committed == artifact_text(artifact), (
            f"contracts/artifacts/{name}.json is stale: "
            "run scripts/compile_contracts.py"
        )
