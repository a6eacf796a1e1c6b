"""The imager adapters a command or the service uses, built once from the settings."""

from __future__ import annotations

from imager_adapters.registry import Adapter, adapter_named, configured_adapters
from marco_svc.config import Settings, SettingsError


def adapters_for(settings: Settings, only: str | None = None) -> list[Adapter]:
    """Configured patterns, built-ins (Rock Maker tree with its metadata) and plug-ins;
    or just the adapter named `only`."""
    try:
        found = configured_adapters(settings.rockmaker_metadata, settings.imager_patterns)
        return [adapter_named(only, found)] if only else list(found)
    except KeyError as exc:
        raise SettingsError(exc.args[0]) from None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
