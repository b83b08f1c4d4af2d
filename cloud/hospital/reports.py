"""Reports: a clinician uploads a PDF for an appointment; the patient reads it on the phone.

Clinicians are the hospital venue's merchant accounts: they sign in to the dashboard and
upload at /dashboard/hospital/<venue> (the dashboard's cookie, CSRF token and tenancy: another
hospital's appointment or report is a 404 there, as every foreign venue is). The patient
reads `DiagnosticReport` (its presentedForm points at `Binary/<id>`, the PDF) with the FHIR
bearer token; another patient gets 403, nobody signed in 401. The PDF is checked to be one
(`%PDF-` first) and small (MAX_PDF), and is served as an attachment with nosniff, so a file
that is not what it says is never rendered by the cloud's origin.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template_string, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from cloud.api import now
from cloud.dashboard import auth, security
from cloud.dashboard.tenancy import own_venue, owned
from cloud.db import get_db
from cloud.hospital import fhir_api, resources
from cloud.hospital.fhir_api import FhirError, bp
from cloud.hospital.models import HospitalReport
from cloud.o2o.booking_models import (
    CHECKED_IN,
    COMPLETED,
    CONFIRMED,
    Booking,
    BookingResource,
    BookingSlot,
)

MAX_PDF = 700 * 1024  # the app's body limit is 1 MiB, forms included
admin = auth.guard(Blueprint("hospital_admin", __name__, url_prefix="/dashboard/hospital"))


def report(row: HospitalReport, base: str) -> dict[str, Any]:
    """The report as a DiagnosticReport, the PDF by reference."""
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": resources.fid(row.id),
        "status": "final",
        "code": {"text": row.title},
        "subject": {"reference": f"Patient/{resources.fid(row.shopper_id)}"},
        "issued": resources.instant(row.issued_at),
        "presentedForm": [{"contentType": "application/pdf", "url": f"{base}/Binary/"
                           f"{resources.fid(row.id)}", "size": row.size, "hash": row.sha1,
                           "title": f"{row.title}.pdf"}],
        "extension": [{"url": resources.EXTENSION + "appointment", "valueReference": {
            "reference": f"Appointment/{resources.fid(row.booking_id)}"}}],
    }  # fmt: skip
    if row.conclusion:
        body["conclusion"] = row.conclusion
    return body


def _own_report(report_id: str) -> HospitalReport:
    me = fhir_api._patient()
    report_id = resources.pid(report_id)
    row = get_db().get(HospitalReport, report_id) if report_id.startswith("drp_") else None
    if row is None:
        raise FhirError(404, "not-found", f"no DiagnosticReport {report_id[:40]}")
    if row.shopper_id != me.id:
        raise FhirError(403, "forbidden", "another patient's report")
    return row


@bp.get("/DiagnosticReport/<report_id>")
def read_report(report_id: str) -> Response:
    return fhir_api.fhir(report(_own_report(report_id), fhir_api.base()))


@bp.get("/DiagnosticReport")
def search_reports() -> Response:
    params = fhir_api._params(["patient"])
    me = fhir_api._patient()
    fhir_api._patient_param(params.get("patient", []), me)
    rows = get_db().scalars(
        select(HospitalReport).where(HospitalReport.shopper_id == me.id)
        .order_by(HospitalReport.issued_at.desc()).limit(fhir_api.MAX_COUNT)
    ).all()  # fmt: skip
    return fhir_api.fhir(resources.bundle(fhir_api.base(), request.url,
                                          [report(r, fhir_api.base()) for r in rows]))  # fmt: skip


def pdf_response(row: HospitalReport) -> Response:
    response = Response(row.pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{row.id}.pdf"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/Binary/<report_id>")
def read_binary(report_id: str) -> Response:
    """The report's PDF itself (only the PDF form: a Binary is only ever a report here)."""
    return pdf_response(_own_report(report_id))


# -- the clinician's side ---------------------------------------------------------------------

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Reports · {{ venue.name }}</title></head><body><h1>Reports · {{ venue.name }}</h1>
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
<table><tr><th>Appointment</th><th>Patient</th><th>State</th><th>Reports</th><th></th></tr>
{% for b, slot, res in rows %}<tr><td>{{ res.name }}, {{ when(slot) }}</td>
<td>{{ b.shopper_id }}</td><td>{{ b.state }}</td>
<td>{% for r in reports.get(b.id, []) %}<a href="{{ prefix }}/reports/{{ r.id }}.pdf">{{ r.title
}}</a> {% endfor %}</td>
<td><form method="post" action="{{ prefix }}/reports" enctype="multipart/form-data">
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<input type="hidden" name="booking_id" value="{{ b.id }}">
<input name="title" required maxlength="120" placeholder="Title">
<input name="conclusion" maxlength="1000" placeholder="Conclusion">
<input type="file" name="pdf" accept="application/pdf" required>
<button>Upload</button></form></td></tr>{% endfor %}</table></body></html>"""


def _page(venue_id: str, error: str | None = None, status: int = 200) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    db = get_db()
    rows = db.execute(
        select(Booking, BookingSlot, BookingResource)
        .join(BookingSlot, BookingSlot.id == Booking.slot_id)
        .join(BookingResource, BookingResource.id == Booking.resource_id)
        .where(Booking.venue_id == venue.id, BookingResource.kind == fhir_api.KIND,
               Booking.state.in_((CONFIRMED, CHECKED_IN, COMPLETED)))
        .order_by(BookingSlot.starts_at.desc()).limit(200)
    ).all()  # fmt: skip
    reports: dict[str, list[HospitalReport]] = {}
    for row in db.scalars(select(HospitalReport).where(HospitalReport.venue_id == venue.id)):
        reports.setdefault(row.booking_id, []).append(row)
    from cloud.o2o.booking_jobs import local_time

    html = render_template_string(
        PAGE, venue=venue, rows=rows, reports=reports, error=error, csrf=security.csrf_token(),
        prefix=f"{admin.url_prefix}/{venue.id}",
        when=lambda slot: local_time(slot, db.get(BookingResource, slot.resource_id)),
    )  # fmt: skip
    return html, status


@admin.get("/<venue_id>")
@auth.login_required
def page(venue_id: str) -> ResponseReturnValue:
    return _page(venue_id)


@admin.post("/<venue_id>/reports")
@auth.login_required
def upload(venue_id: str) -> ResponseReturnValue:
    """One PDF report for one appointment of this hospital."""
    security.require_csrf()
    venue = own_venue(venue_id)
    db = get_db()
    booking_id = request.form.get("booking_id", "")
    found = owned(db, Booking, booking_id, "bkg_", venue)  # another hospital's: a 404 here
    title = request.form.get("title", "").strip()
    upload = request.files.get("pdf")
    data = upload.read(MAX_PDF + 1) if upload is not None else b""
    if not title or len(title) > 120:
        return _page(venue.id, "The title must be 1 to 120 characters.", 400)
    if not data.startswith(b"%PDF-"):
        return _page(venue.id, "The report must be a PDF file.", 400)
    if len(data) > MAX_PDF:
        return _page(venue.id, f"The PDF must be at most {MAX_PDF // 1024} kB.", 400)
    merchant = g.merchant
    row = HospitalReport(
        venue_id=venue.id, booking_id=found.id, shopper_id=found.shopper_id,
        author_id=merchant.id, title=title,
        conclusion=request.form.get("conclusion", "").strip()[:1000] or None, pdf=data,
        size=len(data), sha1=base64.b64encode(hashlib.sha1(data).digest()).decode(),
        issued_at=now(),
    )  # fmt: skip
    db.add(row)
    db.commit()
    return redirect(f"{admin.url_prefix}/{venue.id}", code=303)


@admin.get("/<venue_id>/reports/<report_id>.pdf")
@auth.login_required
def clinician_pdf(venue_id: str, report_id: str) -> ResponseReturnValue:
    venue = own_venue(venue_id)
    return pdf_response(owned(get_db(), HospitalReport, report_id, "drp_", venue))
