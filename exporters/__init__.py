"""Package data / modules of avstream."""
