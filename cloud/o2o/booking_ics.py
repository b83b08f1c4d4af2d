"""A booking as an iCalendar invitation (RFC 5545), built with the `icalendar` library.

One VEVENT whose UID is the booking's id at the cloud's host, so a phone that imports the
file twice (a confirmation, then a cancellation) updates one entry instead of adding a
second: SEQUENCE grows with each change of state and a cancelled booking says
STATUS:CANCELLED. Times are UTC instants; the venue's name is the LOCATION.
"""

from __future__ import annotations

import datetime as dt

import icalendar

from cloud.models import Venue
from cloud.o2o.booking_models import (
    CANCELLED,
    EXPIRED,
    STATES,
    Booking,
    BookingResource,
    BookingSlot,
)

PRODID = "-//Plaza//Bookings//EN"


def invitation(booking: Booking, slot: BookingSlot, resource: BookingResource, venue: Venue,
               host: str, link: str) -> bytes:  # fmt: skip
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = icalendar.Event()
    event.add("uid", f"{booking.id}@{host}")
    event.add("dtstamp", dt.datetime.fromtimestamp(booking.updated_at, dt.UTC))
    event.add("dtstart", dt.datetime.fromtimestamp(slot.starts_at, dt.UTC))
    event.add("dtend", dt.datetime.fromtimestamp(slot.ends_at, dt.UTC))
    event.add("summary", f"{resource.name} — {venue.name}")
    event.add("location", venue.name)
    event.add("url", link)
    event.add("description", f"Booking {booking.id}. Joining the venue's Wi-Fi checks you in.")
    event.add("status", "CANCELLED" if booking.state in (CANCELLED, EXPIRED) else "CONFIRMED")
    event.add("sequence", STATES.index(booking.state))
    calendar.add_component(event)
    return calendar.to_ical()
