"""The demo's hospital chapter, in Chromium on the lab phone: book, pay, arrive, be called,
read the report.

The lab venue is also the demo hospital (`plaza-lab up` seeds its clinics). A real phone's
browser (lab/browser.phone_browser: Chromium in the phone's namespace, trusting the lab CA)
signs the patient in to the shop with the wallet, books the doctor on call (a ¥10 fee) on the
hospital's pages, pays at the wallet's cashier, taps "I have arrived" and gets the clinic's
number; the clinician (a second browser on the venue's Wi-Fi, signed in to the dashboard)
calls the next number from room 3, and the patient's page says so; the clinician uploads a
PDF report, the patient downloads it from "My reports", and another patient (Bob, his own
phone) asking for it gets a 404.

The time: the chapter runs `plaza-cloud hospital seed --on-call` first (cloud/hospital/seed.py:
a doctor on call around the clock, 20-minute slots), and books the earliest free slot, which
starts within 20 minutes, so arriving (allowed from 30 minutes before the slot, Shanghai time)
is allowed at once whatever the hour of the run.

`walk` is the chapter without the lab, so tests/browser/test_hospital_patient.py walks the
same steps on loopback. Each step checks what it must see and raises ShopperError with what
came instead; each screenshot's path is printed with its step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import cloud as labcloud
from lab.browser import PhoneBrowser, phone_browser, shop_sign_in, wallet_approve
from lab.shopper import ShopperError, check

if TYPE_CHECKING:
    from lab.topology import Lab

Say = Callable[[str, str], None]
SHOTS = Path("/var/tmp/plaza-demo/hospital")  # kept after the lab is torn down
CLINIC, DOCTOR, FEE, ROOM = "Emergency", "Dr Sun", "10.00", "3"
REPORT_TITLE = "Chest X-ray"


def tiny_pdf(text: str) -> bytes:
    """A small valid PDF: one page showing `text` (cross-reference offsets computed)."""
    safe = re.sub(r"[()\\]", "", text)
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % at for at in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)  # fmt: skip
    return bytes(out)


def _seen(page: Any) -> str:
    """What the page shows, for a failure's message."""
    try:
        return f"{page.url}: {' '.join(page.inner_text('body').split())[:300]}"
    except Exception as exc:  # a failure message must not fail itself
        return f"{page.url}: ({exc})"


@contextmanager
def step(page: Any, what: str) -> Iterator[None]:
    """A browser step: a Playwright error (a timeout, a missing button) becomes ShopperError
    with what the page showed instead."""
    from playwright.sync_api import Error

    try:
        yield
    except Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShopperError(f"{what}: {first}; the page shows {_seen(page)}") from None


def text_of(page: Any, selector: str) -> str:
    found = page.locator(selector)
    return " ".join(found.inner_text().split()) if found.count() else ""


def wallet_sign_in(page: Any, base: str, next_path: str, user: str, pin: str) -> None:
    with step(page, f"wallet sign-in of {user}"):
        shop_sign_in(page, base, next_path, user, pin)


def book_on_call(page: Any, base: str, venue_id: str) -> None:
    """The earliest free time of the doctor on call: today's, else tomorrow's (just before
    midnight the next slot is tomorrow's first)."""
    doctor = page.locator(f"section.line:has(h2:text-is('{CLINIC}')) form button")
    if not doctor.count():
        with page.expect_navigation():
            page.click("ul.days li:nth-child(2) a")
    check(doctor.count() > 0, f"no free time of {DOCTOR}: {_seen(page)}")
    doctor.first.click()
    page.wait_for_url(re.compile(r".*/plaza/hospital/appointments/bkg_[^/?]+$"))


def walk(patient: PhoneBrowser, base: str, venue_id: str, merchant: tuple[str, str],
         say: Say) -> dict[str, str]:  # fmt: skip
    """The chapter's steps; what the patient saw (number, texts, the appointment's URL)."""
    page, seen = patient.page, {}
    hospital = f"/plaza/hospital/{venue_id}"
    wallet_sign_in(page, base, hospital, "alice", "1234")
    main = text_of(page, "main")
    check(CLINIC in main and DOCTOR in main and f"¥{FEE}" in main, f"clinics: {_seen(page)}")
    shot = patient.snap("hospital-01-clinics")
    say("The patient opens the hospital's pages and signs in with the wallet",
        f"{base}{hospital}: clinics, doctors, today's free times; matched ({shot})")  # fmt: skip

    with step(page, "book and pay"):
        book_on_call(page, base, venue_id)
        seen["appointment"] = page.url
        check(text_of(page, "#state") == "Waiting for the fee", f"held: {_seen(page)}")
        patient.snap("hospital-02-held")
        page.click("#pay")
        page.wait_for_selector("button[name=decision][value=approve]")
        check(FEE in text_of(page, "body"), f"the cashier: {_seen(page)}")
        cashier = patient.snap("hospital-03-cashier")
        wallet_approve(page, "alice", "1234")
        page.wait_for_url(re.compile(re.escape(seen["appointment"]) + r"(\?.*)?$"))
    state = text_of(page, "#state")
    check(state == "Booked", f"after paying, the appointment is {state!r}: {_seen(page)}")
    when = text_of(page, "h1 + p")
    shot = patient.snap("hospital-04-booked")
    say(f"She books {DOCTOR} ({CLINIC}) and pays the ¥{FEE} fee at the wallet's cashier",
        f"{when}: held -> the cashier ({cashier}) -> back on her appointment: {state}; "
        f"matched ({shot})")  # fmt: skip

    with step(page, "I have arrived"):
        page.click("#arrive")
        page.wait_for_selector("#number")
    seen["number"], waiting = text_of(page, "#number"), text_of(page, "#queue-state")
    check(seen["number"].startswith("E") and ("ahead of you" in waiting or waiting ==
          "You are next"), f"arrival: {_seen(page)}")  # fmt: skip
    with step(page, "follow the number"):
        page.click("#follow")  # the page refreshes itself from here on
        page.wait_for_selector("meta[http-equiv=refresh]", state="attached")
    shot = patient.snap("hospital-05-number")
    say("On the day she taps \"I have arrived\"",
        f"checked in, the {CLINIC} queue's number {seen['number']}: {waiting!r}; she asks the "
        f"page to refresh itself; matched ({shot})")  # fmt: skip

    browser = page.context.browser
    desk = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        clinician = desk.new_page()
        clinician.set_default_timeout(20000)
        report = call_and_report(clinician, base, venue_id, merchant, seen, patient, say)
    finally:
        desk.close()

    with step(page, "My reports"):
        page.goto(f"{base}/plaza/hospital/reports")
        check(REPORT_TITLE in text_of(page, "#reports"), f"my reports: {_seen(page)}")
        shot = patient.snap("hospital-08-reports")
        link = page.locator("#reports a").first
        seen["pdf"] = base + (link.get_attribute("href") or "")
        with page.expect_download() as download:
            link.click()
        data = Path(download.value.path()).read_bytes()
    check(data == report, f"the downloaded report is {len(data)} bytes, not the upload")
    say("She opens \"My reports\" and gets the PDF",
        f"{REPORT_TITLE}: {len(data)} bytes, the clinician's PDF; matched ({shot})")  # fmt: skip

    other = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        bob = other.new_page()
        wallet_sign_in(bob, base, "/plaza/hospital/reports", "bob", "5678")
        with step(bob, "another patient asks for the report"):
            answer = bob.goto(seen["pdf"])
        status = answer.status if answer is not None else 0
        check(status == 404, f"Bob asked for Alice's report and got {status}: {_seen(bob)}")
        bob.screenshot(path=str(patient.shots_dir / "hospital-09-bob-404.png"), full_page=True)
    finally:
        other.close()
    say("Another patient cannot open it",
        f"Bob, signed in with his wallet on his phone, asks for {seen['pdf']}: 404; matched "
        f"(screenshots in {patient.shots_dir})")  # fmt: skip
    return seen


def call_and_report(clinician: Any, base: str, venue_id: str, merchant: tuple[str, str],
                    seen: dict[str, str], patient: PhoneBrowser, say: Say) -> bytes:  # fmt: skip
    """The clinician calls the next number from room 3, then uploads the report; the PDF."""
    page = patient.page
    with step(clinician, "the clinician calls the next number"):
        clinician.goto(f"{base}/dashboard/login")
        clinician.fill("#email", merchant[0])
        clinician.fill("#password", merchant[1])
        with clinician.expect_navigation():
            clinician.click("form[action='/dashboard/login'] button[type=submit]")
        clinician.goto(f"{base}/dashboard/queues/{venue_id}")
        clinician.click(f"#queues a:text-is('{CLINIC}')")
        clinician.goto(clinician.url.split("?")[0] + f"?counter={ROOM}")
        with clinician.expect_navigation():
            clinician.click("#call-next")
        page.wait_for_function(  # no reload: the patient's page refreshes itself
            "() => /room/.test(document.querySelector('#queue-state').innerText)",
            timeout=40000)  # fmt: skip
    called = text_of(page, "#queue-state")
    check(called == f"Called: please go to room {ROOM}", f"not called: {_seen(page)}")
    shot = patient.snap("hospital-06-called")
    say(f"The clinician calls the next patient from room {ROOM}",
        f"the dashboard's {CLINIC} queue, window {ROOM}: Call next; her page, refreshing "
        f"itself: {called!r}; "
        f"matched ({shot})")  # fmt: skip

    pdf = tiny_pdf(f"{REPORT_TITLE}: no abnormality seen.")
    booking_id = seen["appointment"].rsplit("/", 1)[1]
    with step(clinician, "the clinician uploads the report"):
        clinician.goto(f"{base}/dashboard/hospital/{venue_id}")
        form = clinician.locator(f"form:has(input[name=booking_id][value='{booking_id}'])")
        form.locator("input[name=title]").fill(REPORT_TITLE)
        form.locator("input[name=conclusion]").fill("No abnormality seen.")
        form.locator("input[type=file]").set_input_files(
            {"name": "chest-xray.pdf", "mimeType": "application/pdf", "buffer": pdf}
        )
        with clinician.expect_navigation():
            form.locator("button").click()
    listed = clinician.locator(f"a[href*='/reports/drp_']:text-is('{REPORT_TITLE}')").count()
    check(listed == 1, f"the upload is not listed: {_seen(clinician)}")
    shot = patient.shots_dir / "hospital-07-clinician-report.png"
    clinician.screenshot(path=str(shot), full_page=True)
    say("The clinician uploads her report",
        f"a {len(pdf)}-byte PDF for her appointment at /dashboard/hospital/{venue_id}; "
        f"matched ({shot})")  # fmt: skip
    return pdf


def run(lab: Lab, netns: str, venue_id: str, say: Say) -> dict[str, str]:
    """The chapter on the lab phone `netns` (online, authorized by the gateway), after the
    doctor on call is seeded (`plaza-cloud hospital seed --on-call`, idempotent)."""
    labcloud.cli(lab.run_dir, "hospital", "seed", venue_id, "--on-call", "--days", "2")
    merchant = (labcloud.MERCHANT_EMAIL, labcloud.MERCHANT_PASSWORD)
    with phone_browser(netns, lab.status()["ca_cert"], SHOTS) as patient:
        return walk(patient, labcloud.CLOUD_URL, venue_id, merchant, say)
