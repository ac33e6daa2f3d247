"""Bundled configurations (TOML). `gais_pipe.config.load_config` resolves names to these files."""
