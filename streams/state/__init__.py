"""Entity state: the projections of domain events that timed triggers follow (DESIGN "state tables")."""
