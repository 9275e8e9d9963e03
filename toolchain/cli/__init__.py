"""The `edgec` command line: `main.py` holds the verb table, one module per verb.

Verbs parse their options and forward to the Python API; nothing more happens here.
"""
