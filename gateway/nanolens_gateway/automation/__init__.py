"""Facility automation beyond the job core: the PostgreSQL job store (several replicas, one database)."""
