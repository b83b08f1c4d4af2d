"""`plaza-cloud transit load-feed | reader-claim | charge` against a fresh SQLite cloud: a good
feed stored and priced from, a bad one refused with the file, line and field, nothing kept."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from sqlalchemy import func, select

from cloud import create_app
from cloud import db as cloud_db
from cloud.transit.models import TransitFeed, TransitReader
from tests.cloud.cli_helpers import run
from tests.cloud.transit_helpers import CITY


def test_load_feed_reader_claim_and_charge(cloud, capsys, tmp_path: Path):
    assert run(capsys, *cloud, "migrate")[0] == 0
    _, merchant, _ = run(capsys, *cloud, "create-merchant", "City Transit", "ops@transit.example",
                         "--password", "correct horse")  # fmt: skip
    _, venue, _ = run(capsys, *cloud, "create-venue", merchant, "City buses")
    code, out, err = run(capsys, *cloud, "transit", "load-feed", str(CITY), "--venue", venue)
    assert (code, err) == (0, "")
    loaded = json.loads(out)
    assert loaded["venue_id"] == venue and loaded["fare_leg_rules"] == 8
    bad = tmp_path / "bad"
    shutil.copytree(CITY, bad)
    (bad / "stop_areas.txt").write_text("area_id,stop_id\nzone9,st_central\n")
    code, out, err = run(capsys, *cloud, "transit", "load-feed", str(bad), "--venue", venue)
    assert (code, out) == (2, "")
    assert err == "plaza-cloud transit: stop_areas.txt line 2, area_id: unknown area 'zone9'"
    code, claim, err = run(capsys, *cloud, "transit", "reader-claim", venue, "--route", "b1")
    assert code == 0 and re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", claim), err
    code, _, err = run(capsys, *cloud, "transit", "reader-claim", venue, "--route", "zz")
    assert code == 2 and "no route 'zz'" in err
    assert run(capsys, *cloud, "transit", "charge") == (
        0, json.dumps({"charged": 0, "refused": 0, "fen": 0}), ""
    )  # fmt: skip
    app = create_app({"INSTANCE_PATH": cloud[1], "DATABASE_URL": cloud[3]})
    with cloud_db.session(app) as db:
        assert db.scalar(select(func.count()).select_from(TransitFeed)) == 1
        assert db.scalar(select(func.count()).select_from(TransitReader)) == 1
    cloud_db.engine(app).dispose()
