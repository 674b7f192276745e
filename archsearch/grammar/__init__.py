"""The grammar: layer kinds (ops), YAML -> frozen specs (spec), shapes/params/MACs/receptive
field (analysis), budget rules (budget), spec -> ``torch.nn.Module`` (build).

Plain data in, plain data out: no hydra, optuna or mlflow, and torch only in ``build``.
"""
