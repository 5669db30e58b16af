"""distproc."""
