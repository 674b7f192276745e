"""Hydra composition: where config files live (paths), composing them (compose), checking the
YAML before Hydra reads it (yamlcheck), and the budget gate the job and the sweeper share (gate).
"""
