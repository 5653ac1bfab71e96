"""`avstream serve`: the monitoring daemon (config, shared graphs, supervisor, REST API)."""
