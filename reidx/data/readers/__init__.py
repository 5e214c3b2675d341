"""The dataset readers, one module per family, each registered with ``@register_dataset("name")``
(:mod:`reidx.data.registry` imports them on first lookup): a new dataset is one file here."""
