"""Headless Chromium walks the demo's hospital chapter (lab/demo_hospital.walk, the same
steps): the patient signs in with the sandbox wallet, books the doctor on call on the
hospital's pages, pays the ¥10 fee at the wallet's cashier (Booked), taps "I have arrived"
(the Emergency number E001, "You are next"); the clinician (a second browser, signed in to
the dashboard) calls the next number from room 3 (the patient's page says so) and uploads a
PDF report; the patient downloads it from "My reports"; Bob, signed in with his own wallet,
gets a 404 for it. Then the patient's page in Chinese. Screenshots:
tests/artifacts/browser/hospital-*.png.

On loopback, no namespaces: the cloud (cheroot on 127.0.0.1, SQLite) seeded with the demo
hospital and its doctor on call (so a slot starts within 20 minutes whatever the hour), and
the sandbox wallet, both over HTTPS with a throwaway lab CA that the phone's Chromium trusts
through its NSS database (lab/browser.phone_browser, the demo's own helper).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cloud import db as cloud_db
from cloud.hospital import seed
from cloud.hospital.models import HospitalReport
from lab import demo_hospital
from lab.browser import phone_browser
from tests.browser.conftest import ARTIFACTS, EMAIL, PASSWORD, audit
from tests.browser.shop_cloud import ShopCloud, serve_shop_cloud


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopCloud]:
    with serve_shop_cloud(tmp_path_factory.mktemp("hospital-patient")) as shop:
        with cloud_db.session(shop.app) as db:
            seed.seed(db, shop.venue_id, time.time(), days=2, on_call=True)
        yield shop


def test_the_patients_hospital_path_in_chromium(hospital: ShopCloud) -> None:
    steps: list[tuple[str, str]] = []
    with phone_browser(None, hospital.ca_cert, ARTIFACTS) as patient:
        violations: list[str] = []
        patient.page.on("console", lambda m: "Content Security Policy" in m.text
                        and violations.append(m.text))  # fmt: skip
        seen = demo_hospital.walk(patient, hospital.base, hospital.venue_id, (EMAIL, PASSWORD),
                                  lambda title, detail: steps.append((title, detail)))  # fmt: skip
        page = patient.page
        assert seen["number"] == "E001"
        assert len(steps) == 7 and all("matched" in detail for _, detail in steps)
        assert {p.name for p in patient.shots} >= {"hospital-01-clinics.png",
                                                    "hospital-08-reports.png"}  # fmt: skip

        # The same appointment in Chinese: called to room 3, the report listed
        page.goto(seen["appointment"] + "?lang=zh-CN")
        assert page.inner_text("#state").strip() == "已到达"
        assert page.inner_text("#queue-state").strip() == "请到 3 号诊室就诊"
        assert page.locator("html[lang='zh-CN']").count() == 1
        patient.snap("hospital-10-zh")
        page.goto(f"{hospital.base}/plaza/hospital/reports")
        assert "我的报告" in page.inner_text("h1") and "下载 PDF" in page.inner_text("main")
        assert violations == []

        # axe (WCAG 2.1 A/AA) on the patient's pages, as the signed-in patient; axe is injected
        # by Playwright, which the CSP would block, so only this context bypasses it
        audited = page.context.browser.new_context(
            viewport={"width": 390, "height": 844}, bypass_csp=True,
            storage_state=page.context.storage_state())  # fmt: skip
        bad = []
        for name, path in (("clinics", f"/plaza/hospital/{hospital.venue_id}"),
                           ("appointment", seen["appointment"].removeprefix(hospital.base)),
                           ("appointments", "/plaza/hospital/appointments"),
                           ("reports", "/plaza/hospital/reports")):  # fmt: skip
            axe_page = audited.new_page()
            axe_page.goto(hospital.base + path)
            bad += audit(axe_page, f"hospital-{name}")
            axe_page.close()
        audited.close()
        assert bad == []

    # The report stored (and downloaded: the walk compared the bytes) is a well-formed PDF:
    # every object where the cross-reference table says, the text the clinician wrote
    with cloud_db.session(hospital.app) as db:
        (pdf,) = db.scalars(select(HospitalReport.pdf)).all()
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n")
    xref = int(re.findall(rb"startxref\n(\d+)", pdf)[-1])
    offsets = [int(x) for x in re.findall(rb"(\d{10}) 00000 n", pdf[xref:])]
    assert len(offsets) == 5
    assert all(pdf[at:].startswith(b"%d 0 obj" % n) for n, at in enumerate(offsets, 1))
    assert b"(Chest X-ray: no abnormality seen.) Tj" in pdf
