"""The hospital's one table of its own (migration 0012): diagnostic reports.

Appointments, slots and the clinic queue live in the booking and queue tables; a report has
no counterpart there, so it gets this table. The PDF is stored in the row (a report is at
most a few hundred kB, the API's body limit is 1 MiB): one database to back up, and a
report is readable by whoever may read its row, no file store with rights of its own.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, new_id


class HospitalReport(Base):
    """A clinician's report for one appointment (FHIR: a DiagnosticReport whose
    presentedForm is the PDF). `venue_id` is the hospital whose clinicians may read it."""

    __tablename__ = "hospital_reports"
    __table_args__ = (Index("ix_hospital_reports_patient", "shopper_id", "issued_at"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=lambda: new_id("drp"))
    venue_id: Mapped[str] = mapped_column(ForeignKey("venues.id"))
    booking_id: Mapped[str] = mapped_column(ForeignKey("bookings.id"))
    shopper_id: Mapped[str] = mapped_column(ForeignKey("shoppers.id"))
    author_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"))
    title: Mapped[str] = mapped_column(String(120))
    conclusion: Mapped[str | None] = mapped_column(String(1000))
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sha1: Mapped[str] = mapped_column(String(28))  # base64, as FHIR's Attachment.hash
    issued_at: Mapped[float] = mapped_column(Float)
