"""The mesh's config: the file (compat.md §1) read, expanded and validated into frozen models.

A floor below the roles: the CLI loads a config and hands each role (gateway, workers) the
models it reads; the roles import these models, never agent_mesh (tests/test_layers.py)."""
