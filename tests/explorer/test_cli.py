"""The ``paroma-explorer`` command: events (text, JSON, CSV, filters), bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ledger.explorer.cli import CSV_COLUMNS, main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_events_json_lists_everything_oldest_first(capsys, scenario, source):
    code, out, err = run(capsys, "events", "--ledger", str(scenario.folder), "--json")
    assert code == 0, err
    events = json.loads(out)
    assert len(events) == source.overview()["events"]
    keys = [(e["block"], e["log_index"]) for e in events]
    assert keys == sorted(keys)
    assert events[0]["kind"] == "member_admitted"


def test_events_csv_with_filters(capsys, scenario):
    code, out, err = run(
        capsys,
        "events",
        "--ledger",
        str(scenario.folder),
        "--kind",
        "model_recorded",
        "--member",
        scenario.dids["B"],
        "--csv",
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(json.loads(r["data"])["round"]) for r in rows] == [1, 2]
    assert {r["member"] for r in rows} == {scenario.dids["B"]}


def test_events_time_range_and_commitment(capsys, scenario):
    folder = str(scenario.folder)
    _, out, _ = run(capsys, "events", "--ledger", folder, "--json")
    every = json.loads(out)
    mid = every[len(every) // 2]
    _, out, _ = run(
        capsys, "events", "--ledger", folder, "--since", mid["time"], "--json"
    )
    since = json.loads(out)
    assert since and all(e["timestamp"] >= mid["timestamp"] for e in since)
    _, out, _ = run(
        capsys, "events", "--ledger", folder, "--until", mid["time"], "--json"
    )
    assert len(json.loads(out)) + len(since) == len(every)
    _, out, _ = run(
        capsys,
        "events",
        "--ledger",
        folder,
        "--commitment",
        scenario.withdrawn.commitment.hex(),
    )
    lines = out.splitlines()
    assert [line.split()[1] for line in lines] == [
        "consent_registered",
        "consent_withdrawn",
    ]


def test_events_limit(capsys, scenario):
    code, out, _ = run(
        capsys, "events", "--ledger", str(scenario.folder), "--limit", "3", "--json"
    )
    assert code == 0 and len(json.loads(out)) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--since", "last tuesday"], "since: expected seconds since the epoch"),
        (["--until", "2026-13-45"], "until: expected"),
        (["--kind", "consent_given"], "kind: expected one of"),
        (["--member", "bob"], "member: expected a DID"),
        (["--commitment", "abc"], "commitment: expected 64 hex digits"),
    ],
)
def test_events_bad_input_is_one_line_exit_2(capsys, scenario, extra, message):
    code, out, err = run(capsys, "events", "--ledger", str(scenario.folder), *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "ledger",
    ["missing-folder", "unreachable-url", "url-without-contract", "empty-folder"],
)
def test_events_unusable_ledger_is_one_line_exit_2(capsys, tmp_path, ledger):
    args = {
        "missing-folder": [str(tmp_path / "nope")],
        "empty-folder": [str(tmp_path)],
        "unreachable-url": [
            f"http://127.0.0.1:{free_port()}",
            "--contract",
            "0x" + "11" * 20,
            "--retries",
            "0",
        ],
        "url-without-contract": ["http://127.0.0.1:1"],
    }[ledger]
    code, out, err = run(capsys, "events", "--ledger", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    if ledger == "unreachable-url":
        assert "unreachable" in err


def test_serve_needs_a_trusted_issuer(capsys, scenario):
    code, _, err = run(capsys, "serve", "--ledger", str(scenario.folder))
    assert code == 2 and "--trusted-issuer" in err


def test_serve_refuses_an_outdated_status_list(capsys, scenario, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"credential": scenario.status_old}))
    code, _, err = run(
        capsys,
        "serve",
        "--ledger",
        str(scenario.folder),
        "--trusted-issuer",
        scenario.regulator.did,
        "--status-list",
        str(path),
    )
    assert code == 2 and "not the current status list" in err


def test_help_of_each_subcommand(capsys):
    for sub in ("serve", "events"):
        with pytest.raises(SystemExit) as done:
            main([sub, "--help"])
        assert done.value.code == 0
        assert "--ledger" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_command_end_to_end(scenario, source):
    """The installed command serves the page on 127.0.0.1 until stopped."""
    port = free_port()
    exe = Path(sys.executable).with_name("paroma-explorer")
    proc = subprocess.Popen(
        [
            str(exe),
            "serve",
            "--ledger",
            str(scenario.folder),
            "--port",
            str(port),
            "--trusted-issuer",
            scenario.regulator.did,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert c.get("/api/session").json() == {"signed_in": False}
            assert c.get("/api/members").status_code == 401
            challenge = c.get("/api/challenge").json()
            vp = scenario.present(
                scenario.auditor_vc, challenge["challenge"], challenge["domain"]
            )
            assert c.post("/api/signin", json=vp).status_code == 200
            assert len(c.get("/api/members").json()["members"]) == 4
    finally:
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # waits, closes both pipes
    assert proc.returncode == 0, err
    assert "stopped" in out
