"""Orchestration behind the API verbs: each module wires data, models, engine and evaluation for one verb."""
