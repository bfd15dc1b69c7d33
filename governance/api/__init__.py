"""The governance REST API (DRF): policy check, export and import for staff and CI."""
