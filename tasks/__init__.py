"""Prefect tasks: thin, retrying wrappers that call plugins and record intent and result in the ledger.

Tasks take the `turnout.runtime.Runtime` of the environment; they never choose a backend
themselves. `NO_CACHE`: every call acts on the world and must run.
"""
