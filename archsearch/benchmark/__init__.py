"""What ``python -m archsearch.bench`` measures, apart from the command that writes the table.

- :mod:`~archsearch.benchmark.parts`: the registry of parts, name -> the function that measures it
  (``parts=...`` chooses among them; the table keeps the registry's order);
- :mod:`~archsearch.benchmark.training_parts`: training end to end vs the reference loop, the model
  step per precision/layout, torch.compile;
- :mod:`~archsearch.benchmark.search_parts`: the validator, a sweep's per-trial overhead, trials per
  hour at one trial per core;
- :mod:`~archsearch.benchmark.memory`: peak memory of a training process tree, watched from a child;
- :mod:`~archsearch.benchmark.reference`: the reference training loop the training rows compare to;
- :mod:`~archsearch.benchmark.inputs`: the model and images the parts measure on;
- :mod:`~archsearch.benchmark.figures`: how a measurement is written (median and range);
- :mod:`~archsearch.benchmark.machine`: the one-line description of the machine.
"""
