"""Throughput of credential signing and verification for both cryptosuites.

Prints ``jcs_sign_per_s``, ``jcs_verify_per_s``, ``rdfc_sign_per_s``,
``rdfc_verify_per_s`` (credentials per second, one core) and
``rdfc_over_jcs_cost`` (time of one rdfc sign+verify over one jcs sign+verify).
Runs in a few seconds; the budget per measurement is ``--seconds``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from identity.credentials import issue_credential, make_credential, verify_credential
from identity.keys import SigningKey


def rate(action: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``action`` over at least ``seconds`` (after warm-up)."""
    action()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or count < 5:
        action()
        count += 1
    return count / elapsed


def _signer(
    unsigned: dict[str, Any], issuer: SigningKey, suite: str
) -> Callable[[], Any]:
    return lambda: issue_credential(unsigned, issuer, cryptosuite=suite)


def _verifier(signed: dict[str, Any]) -> Callable[[], Any]:
    return lambda: verify_credential(signed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)

    issuer = SigningKey.from_seed(bytes(range(32)))
    now = datetime.now(UTC)
    unsigned = make_credential(
        issuer.did,
        SigningKey.from_seed(bytes(range(1, 33))).did,
        ["ClinicianCredential"],
        {"role": "cardiologist", "site": "hospital-a"},
        now - timedelta(days=1),
        now + timedelta(days=365),
    )
    rates: dict[str, float] = {}
    for name, suite in (("jcs", "eddsa-jcs-2022"), ("rdfc", "eddsa-rdfc-2022")):
        signed = issue_credential(unsigned, issuer, cryptosuite=suite)
        if not verify_credential(signed).verified:
            raise SystemExit(f"{suite}: a fresh credential did not verify")
        rates[f"{name}_sign_per_s"] = rate(
            _signer(unsigned, issuer, suite), args.seconds
        )
        rates[f"{name}_verify_per_s"] = rate(_verifier(signed), args.seconds)
    for key, value in rates.items():
        print(f"{key}: {value:.1f}")
    jcs_cost = 1 / rates["jcs_sign_per_s"] + 1 / rates["jcs_verify_per_s"]
    rdfc_cost = 1 / rates["rdfc_sign_per_s"] + 1 / rates["rdfc_verify_per_s"]
    print(f"rdfc_over_jcs_cost: {rdfc_cost / jcs_cost:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
