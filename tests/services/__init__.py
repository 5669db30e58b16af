"""Real services for the gated tests: a one-node Slurm cluster and an XRootD server on localhost."""
