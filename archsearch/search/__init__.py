"""Optuna searches: studies (storages, samplers, pruners), the search space, the sweeper's loop
and its pool of trial processes, the trial contract, and reading studies and their results.
"""
