"""The grammar: layer kinds (ops), a model's list of layers and blocks (layers), YAML -> frozen
specs (spec), shapes/params/MACs/receptive field (analysis), budget rules (budget), the
per-layer table (table), spec -> ``torch.nn.Module`` (build).

Plain data in, plain data out: no hydra, optuna or mlflow, and torch only in ``build``.
"""
