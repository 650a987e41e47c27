"""The simulator's errors.

    common.errors.ParomaError
    └── SimulatorError
        ├── ScenarioInvalid      a scenario file or field is not what was expected
        ├── ScenarioNotFound     no such scenario file or shipped scenario name
        └── RunFailed            the federation could not be set up or run

Messages name the scenario field (``sites[2].profile``) and what was expected;
they never carry a patient pseudonym, a salt or a key.
"""

from __future__ import annotations

from common.errors import BadInput, ParomaError


class SimulatorError(ParomaError):
    """Any error of ``paroma-sim``."""


class ScenarioInvalid(SimulatorError, BadInput):
    """A scenario file is not valid TOML, or a field is missing or wrong."""


class ScenarioNotFound(SimulatorError, BadInput):
    """The scenario is neither a readable file nor a shipped scenario's name."""


class RunFailed(SimulatorError):
    """The federation could not be set up or a run could not finish."""
