"""The audit outbox moved to bus/audit_outbox.py (the front-ends send audit events too: a tool
definition changed or accepted); these names stay importable from here for the workers."""

from bus.audit_outbox import AuditOutbox, audit_event

__all__ = ["AuditOutbox", "audit_event"]
