import gc
import warnings

import pytest

from tests.node.federation import Federation, deploy_template, make_federation_on


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets(request):
    """Collect sockets py-libp2p 0.8.1 sometimes leaves unclosed at host shutdown.

    The leak is inside the library (a dial still in flight when its swarm is
    closed); collecting here, with its ResourceWarning silenced, keeps it from
    surfacing as an unraisable exception in a later, unrelated test.
    """
    yield
    if request.node.get_closest_marker("slow") is None:
        return  # only the tests that start hosts; a collection costs ~0.5 s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def ledger_template(tmp_path_factory):
    """The federation contract deployed once per session (copied per test)."""
    return deploy_template(tmp_path_factory.mktemp("ledger-template") / "ledger")


@pytest.fixture
def make_federation(ledger_template, tmp_path):
    """``make_federation(sites)``: a federation on a fresh copy of the ledger."""
    made: list[Federation] = []

    def factory(sites: int) -> Federation:
        federation = make_federation_on(
            ledger_template, tmp_path / f"ledger{len(made)}", sites
        )
        made.append(federation)
        return federation

    yield factory
    for federation in made:
        federation.close()
