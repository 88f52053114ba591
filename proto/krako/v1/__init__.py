"""Generated wire code of package krako.v1 (see proto/generate.py)."""
