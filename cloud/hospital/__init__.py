"""The hospital (issue 17): a FHIR R4 API on the booking and queue cores.

Nothing here owns a table of its own for appointments: a FHIR Schedule is a booking resource
of kind `appointment`, a Slot is a booking slot, an Appointment is a booking (its fee is the
booking's deposit, paid through the wallet's payments and ledger), and the clinic's line is a
service queue of kind `clinic`. This package only translates: FHIR in, the cores' calls, FHIR
out (resources.py builds the JSON, fhir_api.py serves it under /fhir/r4/), and the patient's
pages under /plaza/hospital (pages.py) show the same appointments on a phone.
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """The FHIR API's blueprint (its own error handlers: every error an OperationOutcome)."""
    # reports, fhir_appointments and fhir_directory add their routes to fhir_api.bp: imported
    # before the blueprint is registered
    from cloud.hospital import (
        arrival,
        clinicians,
        fhir_api,
        fhir_appointments,  # noqa: F401  (its routes)
        fhir_directory,  # noqa: F401  (its routes)
        pages,
        patients,
        reports,
    )

    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(patients.bp)
    app.register_blueprint(pages.bp)  # the patient's pages, in the shop's cookie
    app.register_blueprint(reports.admin)
    app.register_blueprint(clinicians.bp)  # the clinician's FHIR token, in the dashboard's
    arrival.init_app()
