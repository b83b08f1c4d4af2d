"""`plaza-cloud hospital seed VENUE` against a fresh SQLite cloud (what `plaza-lab up` runs):
clinics with their queues, doctors' schedules, a week of free slots; run again, nothing
doubled; the seeded slots are found by the FHIR Slot search; an unknown venue refused."""

from __future__ import annotations

import json
from pathlib import Path

from cloud import create_app
from cloud import db as cloud_db
from tests.cloud.cli_helpers import run


def test_seed_a_demo_hospital(cloud, capsys, tmp_path: Path):
    assert run(capsys, *cloud, "migrate")[0] == 0
    _, merchant, _ = run(capsys, *cloud, "create-merchant", "Plaza Hospital", "dr@h.example",
                         "--password", "correct horse")  # fmt: skip
    _, venue, _ = run(capsys, *cloud, "create-venue", merchant, "Plaza Hospital")
    code, out, err = run(capsys, *cloud, "hospital", "seed", venue)
    assert (code, err) == (0, "")
    added = json.loads(out)
    assert added["schedules"] == 4 and added["queues"] == 3
    assert added["slots"] >= 4 * 5 * 22  # 22 slots a day, at least 5 open days in 7
    code, out, _ = run(capsys, *cloud, "hospital", "seed", venue)
    assert code == 0 and json.loads(out) == {"schedules": 0, "queues": 0, "slots": 0}
    code, _, err = run(capsys, *cloud, "hospital", "seed", "ven_0000000000000000")
    assert code == 2 and "no venue" in err

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "SECRET_KEY": "t",
                      "INSTANCE_PATH": str(tmp_path / "instance")})  # fmt: skip
    bundle = app.test_client().get("/fhir/r4/Slot?status=free&_count=500").get_json()
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 500
    schedules = app.test_client().get("/fhir/r4/Schedule").get_json()
    names = sorted(e["resource"]["actor"][0]["display"] for e in schedules["entry"])
    assert names[0] == "Cardiology: Dr Li" and len(names) == 4
    cloud_db.engine(app).dispose()
