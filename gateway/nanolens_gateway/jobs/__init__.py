"""Durable jobs: many objects analysed as one unit of work that survives restarts (store, runner, RPCs)."""
