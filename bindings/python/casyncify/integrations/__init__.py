"""Integrations of casyncify with other libraries, each imported on demand:
``casyncify.integrations.dspy`` routes DSPy's ``asyncify`` and ``streamify`` through casyncify."""
