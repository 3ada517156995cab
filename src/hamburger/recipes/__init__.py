"""Deprecated: the 0.1 layout's jobs, now in ``hamburger.engine`` and the task packages. Each module here is an alias
that warns (see :mod:`hamburger.deprecation`); removed in 0.3."""
