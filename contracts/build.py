"""Compile the Solidity sources with the pinned npm ``solc`` and load the artifacts.

The artifacts (ABI + bytecode) are committed under ``contracts/artifacts`` so
that installing the Python package needs no Node.js; only
``scripts/compile_contracts.py`` and the artifact check test call the compiler.
Compiler input is solc's standard JSON with ``evmVersion: paris`` (Besu and
anvil both run it; later forks add opcodes such as PUSH0 that some consortium
chains do not enable) and the optimizer on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from common.errors import ParomaError


class ContractArtifactError(ParomaError):
    """The compiled contract artifacts are missing, or cannot be compiled."""


SOLC_VERSION = "0.8.30"
"""The compiler release pinned in package.json."""

CONTRACTS = ("Federation",)
"""The contracts compiled into artifacts, one ``<name>.sol`` each."""

SETTINGS: dict[str, Any] = {
    "evmVersion": "paris",
    "optimizer": {"enabled": True, "runs": 200},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = Path(__file__).resolve().parent / "src"
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"

# Runs solcjs's standard-JSON entry point; stdin carries the input JSON.
_NODE_SCRIPT = (
    "const solc = require('solc');"
    "let s = ''; process.stdin.on('data', d => s += d);"
    "process.stdin.on('end', () => process.stdout.write("
    "JSON.stringify({version: solc.version(), output: JSON.parse(solc.compile(s))})));"
)


def solc_available(repo_root: Path = REPO_ROOT) -> bool:
    """True if ``node`` and ``node_modules/solc`` are there to compile with."""
    return (
        shutil.which("node") is not None
        and (repo_root / "node_modules" / "solc" / "package.json").is_file()
    )


def compile_sources(repo_root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """Compile every contract with node + solcjs; returns name -> artifact dict.

    Raises:
        ContractArtifactError: node or solc is missing, or the compiler reported
            an error.
    """
    if not solc_available(repo_root):
        raise ContractArtifactError(
            "cannot compile: expected `node` on PATH and node_modules/solc "
            f"under {repo_root} (run `npm ci`)"
        )
    sources = {
        f"{name}.sol": {"content": (SOURCE_DIR / f"{name}.sol").read_text("utf-8")}
        for name in CONTRACTS
    }
    request = {"language": "Solidity", "sources": sources, "settings": SETTINGS}
    node = shutil.which("node")
    assert node is not None
    proc = subprocess.run(
        [node, "-e", _NODE_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=repo_root,
        check=False,
        timeout=600,
    )
    if proc.returncode != 0:
        raise ContractArtifactError(f"solcjs failed: {proc.stderr.strip()[:2000]}")
    result = json.loads(proc.stdout)
    version: str = result["version"]
    if not version.startswith(SOLC_VERSION + "+"):
        raise ContractArtifactError(
            f"solc {version} found, expected {SOLC_VERSION} (pinned in package.json)"
        )
    output = result["output"]
    errors = [e for e in output.get("errors", []) if e["severity"] == "error"]
    if errors:
        text = "\n".join(e["formattedMessage"] for e in errors)
        raise ContractArtifactError(f"solc reported errors:\n{text}")
    artifacts = {}
    for name in CONTRACTS:
        compiled = output["contracts"][f"{name}.sol"][name]
        source = sources[f"{name}.sol"]["content"]
        artifacts[name] = {
            "contractName": name,
            "compiler": version,
            "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
            "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
        }
    return artifacts


def artifact_text(artifact: dict[str, Any]) -> str:
    """The canonical file text of an artifact (sorted keys, stable diff)."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def write_artifacts(artifacts: dict[str, dict[str, Any]]) -> list[Path]:
    """Write each artifact to ``contracts/artifacts/<name>.json``."""
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, artifact in artifacts.items():
        path = ARTIFACT_DIR / f"{name}.json"
        path.write_text(artifact_text(artifact), "utf-8")
        paths.append(path)
    return paths


def load_artifact(name: str = "Federation") -> dict[str, Any]:
    """The committed artifact of contract ``name`` (abi, bytecode, compiler).

    Raises:
        ContractArtifactError: the package has no artifact of that name.
    """
    try:
        text = resources.files("contracts").joinpath(f"artifacts/{name}.json")
        loaded: dict[str, Any] = json.loads(text.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ContractArtifactError(
            f"contract artifact {name}.json missing or unreadable: "
            "run scripts/compile_contracts.py"
        ) from exc
    return loaded
