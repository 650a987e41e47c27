"""Peer identity conversions, config checks and the store, without a network."""

import pytest
import torch
from libp2p.crypto.rsa import create_new_key_pair as new_rsa_key_pair
from libp2p.peer.id import ID

from identity.keys import SigningKey
from ml.weights import model_digest
from node.config import default_config, load_config, parse_config
from node.daemon import RobustMode
from node.errors import ConfigInvalid, PeerRefused
from node.peer_identity import (
    did_from_peer_id,
    key_pair_from_signing_key,
    peer_id_from_did,
)
from node.store import SiteStore
from tests.node.federation import small_state

# ----- peer ID <-> did:key -----------------------------------------------------------


def test_peer_id_and_did_name_the_same_key():
    key = SigningKey.from_seed(bytes(range(32)))
    peer_id = ID.from_pubkey(key_pair_from_signing_key(key).public_key)
    assert did_from_peer_id(peer_id) == key.did
    assert peer_id_from_did(key.did) == peer_id
    assert str(peer_id).startswith("12D3KooW")


def test_rsa_peer_has_no_did():
    peer_id = ID.from_pubkey(new_rsa_key_pair(1024).public_key)
    with pytest.raises(PeerRefused, match="Ed25519"):
        did_from_peer_id(peer_id)


@pytest.mark.parametrize("did", ["did:web:example.org", "did:key:zQ3sbad", "x"])
def test_non_ed25519_did_has_no_peer_id(did):
    with pytest.raises(PeerRefused, match="not an Ed25519 did:key"):
        peer_id_from_did(did)


# ----- config ------------------------------------------------------------------------


def test_default_config_parses(tmp_path):
    document = default_config(issuers=("did:key:z6MkTest",))
    config = parse_config(document, tmp_path)
    assert config.averaging.robust is RobustMode.NONE
    assert config.keystore == tmp_path / "keystore"
    assert config.node_settings().status_file == tmp_path / "store" / "status.json"


@pytest.mark.parametrize(
    ("table", "field", "value", "named"),
    [
        ("averaging", "robust", "fast", "averaging.robust"),
        ("averaging", "period_s", "soon", "averaging.period_s"),
        ("averaging", "period_s", -1, "averaging.period_s"),
        ("averaging", "trim", 1.5, "averaging.trim"),
        ("averaging", "fp16", "yes", "averaging.fp16"),
        ("averaging", "tau", 0, "averaging.tau"),
        ("network", "listen", "not an address", "network.listen"),
        ("network", "listen", "/ip4/127.0.0.1/udp/4001", "network.listen"),
        ("network", "bootstrap", ["/ip4/127.0.0.1/tcp/1"], "network.bootstrap"),
        ("network", "bootstrap", "one", "network.bootstrap"),
        ("federation", "issuer_dids", ["nobody"], "federation.issuer_dids"),
        ("training", "model", "huge", "training.model"),
        ("site", "n_samples", 0, "site.n_samples"),
        ("ledger", "spec", 5, "ledger.spec"),
        # The ledger account key once lay in clear in this file: refused.
        ("ledger", "account_key_file", "ledger-account.key", "ledger.account_key_file"),
        ("extensions", "modules", [1], "extensions.modules"),
    ],
)
def test_bad_config_field_is_named(tmp_path, table, field, value, named):
    document = default_config()
    document[table][field] = value
    with pytest.raises(ConfigInvalid, match=named.replace(".", r"\.")):
        parse_config(document, tmp_path)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigInvalid, match="paroma-node init"):
        load_config(tmp_path)
    (tmp_path / "node.toml").write_text("[site\n")
    with pytest.raises(ConfigInvalid, match="not valid TOML"):
        load_config(tmp_path)


# ----- store -------------------------------------------------------------------------


def _save(store: SiteStore, round_: int, seed: int) -> dict[str, torch.Tensor]:
    state = small_state(seed)
    store.save_checkpoint(round_, state, 4.0, model_digest(state))
    return state


def test_store_resumes_from_latest_round(tmp_path):
    store = SiteStore(tmp_path)
    _save(store, 0, 0)
    latest = _save(store, 1, 1)
    store.close()
    saved = SiteStore(tmp_path).latest_checkpoint(small_state(0))
    assert saved is not None and saved.round == 1 and saved.n_samples == 4.0
    assert all(torch.equal(saved.state[n], latest[n]) for n in latest)
    assert saved.digest == model_digest(latest)


def test_store_skips_a_damaged_checkpoint_and_an_orphan_file(tmp_path):
    store = SiteStore(tmp_path)
    _save(store, 0, 0)
    _save(store, 1, 1)
    store.checkpoint_path(1).write_bytes(b"not safetensors")
    # A crash after the file was written but before its row: ignored.
    store.checkpoint_path(2).write_bytes(b"orphan")
    saved = store.latest_checkpoint(small_state(0))
    assert saved is not None and saved.round == 0


def test_store_prunes_old_files_and_tracks_ledger_records(tmp_path):
    store = SiteStore(tmp_path)
    for round_ in range(6):
        _save(store, round_, round_)
    files = sorted(p.name for p in store.checkpoints.iterdir())
    assert files == [f"round-00000{r}.safetensors" for r in (3, 4, 5)]
    assert [r["round"] for r in store.unrecorded_rounds()] == list(range(6))
    store.mark_recorded(0)
    assert store.unrecorded_rounds()[0]["round"] == 1
    store.note_refusal("did:key:z6Mk", "not a current member")
    assert store.refusals()[0]["reason"] == "not a current member"
