"""`agent-mesh supervisor`: resolves a mesh's pending approvals with rules, then a local LLM, else
leaves them to a human (deployment-modes.md configs 2, 3, 6; compat.md §7). It talks to the mesh
only through its public HTTP API, so it works against any compatible mesh (the Go one too).

Modules: `config` (the YAML file), `conditions` (the rule language), `decide` (rules → LLM →
escalate), `llm` + `prompt` (model servers), `memory` (decisions, SQLite), `mesh_api` (HTTP
client), `loop` (polling), `mesh_process` (start / attach / restart the mesh), `cli`.
"""
