"""Generated stubs of the wire API (proto/streamrec/v1); regenerate with `python proto/generate.py`."""
