"""The audit REST API (DRF): search, one record, a call's story, and the verifiable export."""
