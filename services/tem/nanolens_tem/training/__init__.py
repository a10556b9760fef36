"""Training code (torch). Never imported by the serving path."""
