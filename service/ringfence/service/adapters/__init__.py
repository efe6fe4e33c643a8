"""Adapters: the outside world (MaxMind databases, storage backends) behind the core's ports."""
