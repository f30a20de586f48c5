"""Every exception Tidings raises, under one root.

    TidingsError
    ├── ConfigurationError          settings, packs or tenants that cannot work
    ├── RejectedInput               one input record is unusable: dead-letter it, keep going
    │   ├── UndecodableRecord       not Avro, unknown schema, corrupt body
    │   ├── UnknownEventType        decodes, but no pack knows the type
    │   ├── InvalidEvent            a required field is missing or malformed
    │   ├── UnknownTenant           the tenant id names no configured tenant
    │   ├── InvalidRecipient        the address is not a deliverable address
    │   ├── RenderFailed            a template raised while rendering this mail
    │   └── RecordTooLarge          an output record the broker would refuse (message_too_large)
    ├── InfrastructureFailure       the broker, the disk or the store failed: hold the record, stop
    └── DeliveryError               the mail could not be handed to the provider
        ├── RetryableDelivery       try again later (throttling, timeouts)
        └── PermanentDelivery       the provider will never accept this mail

Each ``RejectedInput`` carries a machine-readable ``reason`` (a short snake_case code used as a
metric label and as the ``tidings.reason`` header on the dead-letter topic) and a human
``detail`` that never contains payload values (payloads may hold secrets).
"""

from __future__ import annotations


class TidingsError(Exception):
    """Root of every error Tidings raises on purpose."""


class ConfigurationError(TidingsError):
    """Settings, packs, templates or tenants that cannot work; raised at start-up."""


class RejectedInput(TidingsError):
    """One input record is unusable; it goes to the dead-letter topic and the stream goes on."""

    reason = "rejected"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class UndecodableRecord(RejectedInput):
    """The bytes are not a single-object Avro record of a known schema."""

    reason = "undecodable"


class UnknownEventType(RejectedInput):
    """The record decodes, but no trigger pack handles its type."""

    reason = "unknown_event_type"


class InvalidEvent(RejectedInput):
    """A field the rules or templates need is missing or malformed."""

    reason = "invalid_event"


class UnknownTenant(RejectedInput):
    """The event names a tenant that is not configured."""

    reason = "unknown_tenant"


class InvalidRecipient(RejectedInput):
    """The recipient address cannot receive mail."""

    reason = "invalid_recipient"


class RenderFailed(RejectedInput):
    """A template raised while rendering this one mail."""

    reason = "render_failed"


class RecordTooLarge(RejectedInput):
    """An output record (a rendered mail, a firing) is larger than the broker accepts."""

    reason = "message_too_large"


class InfrastructureFailure(TidingsError):
    """Something the record's processing depends on failed (the broker refused a write, the disk
    is full, the local store broke). The record is not acknowledged: the worker stops so that its
    open transaction aborts, and the record is processed again after the restart
    (``streams/runtime/guard.py``)."""


class DeliveryError(TidingsError):
    """The mail could not be handed to the email provider."""


class RetryableDelivery(DeliveryError):
    """A transient provider failure: the same request may succeed later."""


class PermanentDelivery(DeliveryError):
    """The provider will never accept this mail as it is."""


class SendingBlocked(RetryableDelivery):
    """The provider refuses all sending until an operator acts: the account is paused or
    suspended, or the sender identity is not verified. The backlog waits; nothing is dead-lettered."""


class OutcomeUnknown(DeliveryError):
    """The request may have reached the provider but no answer came back (read timeout, connection
    dropped mid-request): the mail may or may not have been sent. See ``streams/delivery/policy.py``."""
