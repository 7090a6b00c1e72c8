"""The data-prep pipeline core; ``run_prepare(cfg)`` is the whole job (see ``runner``)."""
