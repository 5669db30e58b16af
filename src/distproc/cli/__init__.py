"""The ``distproc`` command line: a thin layer over the Python API (the only code importing click)."""
