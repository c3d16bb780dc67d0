"""Events: the PDU model, room versions, redaction, building and validation."""
