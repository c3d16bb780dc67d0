"""Configuration: the homeserver.yaml and worker files, validated with one clear
error line per mistake (``ConfigError``), and ``generate-config``."""

from atrium.config.homeserver import ConfigError, HomeServerConfig, load_config

__all__ = ["ConfigError", "HomeServerConfig", "load_config"]
