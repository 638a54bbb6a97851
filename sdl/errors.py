"""One exception family for everything sdl reports to a user.

Messages name what was wrong (field path, file, topic, trial) and what would be accepted.
"""


class SdlError(Exception):
    """Base of every error sdl raises on purpose."""


class ConfigError(SdlError):
    """A campaign file or option is wrong."""


class ProtocolError(SdlError):
    """An MQTT message does not follow docs/protocol.md."""


class TransportError(SdlError):
    """The broker cannot be reached, or a connection was lost."""


class DriverError(SdlError):
    """A driver answered with an error, or never answered."""


class AnalysisError(SdlError):
    """A measurement cannot be analysed (bad values, failed fit, unknown analyser)."""


class StoreError(SdlError):
    """The store cannot be opened, or holds something inconsistent."""


class StrategyError(SdlError):
    """The active-learning strategy cannot propose or learn."""


class CampaignBusy(StoreError):
    """Another orchestrator runs the campaign (it holds the campaign's lease in the store)."""
