"""The per-frame orchestration: the Localizer and the steps and decisions it calls, and its result types."""
