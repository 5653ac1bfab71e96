"""The supervisor, worker processes, the compiled graph and the pipeline compiler."""
