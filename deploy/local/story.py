"""The demo's month: events whose timed mails fall in the weeks after ``make demo`` runs.

``make demo`` publishes these with its other events (the worker gets them now, like any producer's
events) and then simulates the following weeks (``tidings-replay --simulate``). One event lies in
the future, so it is not published: an invoice paid on day 6, between the first and the second
dunning step. The demo adds it to the simulation's input (``later``), which is how "what if this
customer pays on day 6" is asked of a replay.

Every date is relative to ``now``: the story reads the same whenever the demo runs. What it shows
(tenants' parameters from ``deploy/tenants/``):

- storage, lagerhaus-nord: a booking moving in in 4 days (the reminder 3 days before, on day 1)
  and out in 24 days (the reminder 14 days before, the tenant's "x days"), and two invoices due tomorrow: both get the due-date mail and the first
  dunning step (3 days after the due date); the one paid on day 6 gets no further step, the other
  gets steps 2 and 3 (days 10 and 20 after the due date);
- charging, stromnetz-sued: a station whose last heartbeat is now: the "no connectivity" mail after
  the tenant's 30 minutes;
- advisors, beraterfinder: an appointment in three days (the reminder the day before) and an
  advisor with two open slots (the reminder every Wednesday while fewer than five are open).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from deploy.local.samples import booking_created
from streams.domain.samples import new_envelope

STORAGE, CHARGING, ADVISORS = "lagerhaus-nord", "stromnetz-sued", "beraterfinder"


@dataclass(frozen=True)
class StoryEvent:
    type_name: str
    key: str
    record: dict[str, Any]
    at: dt.datetime  # the event's time: now for the published ones


def published(now: dt.datetime, run: str) -> list[StoryEvent]:
    """The events the demo publishes now. Only the booking has an event mail (its confirmation)."""
    today = now.date()
    day = dt.timedelta(days=1)
    customer = {"id": "CU-STORY", "email": f"month-customer.{run}@example.org", "name": "Jana Müller",
                "locale": "de", "time_zone": "Europe/Berlin"}
    booking = booking_created(STORAGE, 7, email=customer["email"], locale="de", booking_id="BK-STORY", occurred_at=now)
    # Moving in on day 4: the reminder three days before falls on day 1, in the simulated weeks
    # whatever the hour the demo runs. On day 2 it fell due yesterday, and the worker still sent
    # it within its day of grace when the demo ran early in the morning (16 mails instead of 15).
    booking.update(move_in_date=today + 4 * day, move_out_date=today + 24 * day)
    events = [StoryEvent("tidings.storage.BookingCreated", "BK-STORY", booking, now)]
    for invoice in ("INV-STORY-OPEN", "INV-STORY-PAID"):
        events.append(StoryEvent("tidings.storage.InvoiceIssued", invoice, {
            "envelope": new_envelope(STORAGE, now=now, producer="storage-manager"), "invoice_id": invoice,
            "booking_id": "BK-STORY", "customer": customer, "invoice_number": invoice.replace("INV", "RE"),
            "amount": {"amount_minor": 8900, "currency": "EUR"}, "due_date": today + day,
            "pay_url": f"https://kundenportal.lagerhaus-nord.example/rechnungen/{invoice}"}, now))
    owner = {"id": "CU-STN", "email": f"month-station.{run}@example.org", "name": "Thomas Huber", "locale": "de",
             "time_zone": "Europe/Berlin"}
    events.append(StoryEvent("tidings.charging.StationRegistered", "STN-STORY", {
        "envelope": new_envelope(CHARGING, now=now, producer="station-gateway"), "station_id": "STN-STORY",
        "customer": owner, "station_name": "Garage Huber", "station_address": "Am Anger 7, 85354 Freising",
        "station_url": "https://portal.example/stations/STN-STORY"}, now))
    events.append(StoryEvent("tidings.charging.StationHeartbeat", "STN-STORY", {
        "envelope": new_envelope(CHARGING, now=now, producer="station-gateway"), "station_id": "STN-STORY",
        "seen_at": now}, now))
    advisor = {"id": "ADV-STORY", "email": f"month-advisor.{run}@example.org", "name": "Markus Weber", "locale": "de",
               "time_zone": "Europe/Berlin"}
    events.append(StoryEvent("tidings.advisors.AdvisorAvailabilityChanged", "ADV-STORY", {
        "envelope": new_envelope(ADVISORS, now=now, producer="calendar"), "advisor_id": "ADV-STORY",
        "advisor": advisor, "profile_active": True, "open_slots": 2,
        "calendar_url": "https://www.beraterfinder.example/berater/kalender"}, now))
    return events


def appointment_times(now: dt.datetime) -> dict[str, dt.datetime]:
    """The demo's appointment (the pack sample's, whose own date has passed): in three days, 45 minutes."""
    starts = dt.datetime.combine(now.date() + dt.timedelta(days=3), dt.time(9), dt.timezone.utc)
    return {"starts_at": starts, "ends_at": starts + dt.timedelta(minutes=45)}


def later(now: dt.datetime) -> list[StoryEvent]:
    """What the future holds: the second invoice paid on day 6 (after the first dunning step)."""
    paid = dt.datetime.combine(now.date() + dt.timedelta(days=6), dt.time(10), dt.timezone.utc)
    return [StoryEvent("tidings.storage.InvoicePaid", "INV-STORY-PAID", {
        "envelope": new_envelope(STORAGE, now=paid, producer="storage-manager"), "invoice_id": "INV-STORY-PAID",
        "paid_at": paid}, paid)]
