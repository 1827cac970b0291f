"""dinet."""
