"""`plaza-cloud transit ...`: load a GTFS feed, quote a journey, make reader claim codes,
charge the taps readers uploaded.

`quote` is pure (a feed directory and a JSON file in, JSON out) so an agency can check its
feed without a cloud; the others work on the cloud's database. Each returns the exit status
and says what went wrong on stderr: 0 done, 2 refused (a bad feed, a journey it cannot price).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from cloud.transit.fares import FareEngine, FareError, legs_from_json
from cloud.transit.feed import FeedError, load_feed

AppFactory = Callable[[argparse.Namespace], Flask]


def _fail(message: str) -> int:
    print(f"plaza-cloud transit: {message}", file=sys.stderr)
    return 2


def cmd_quote(args: argparse.Namespace) -> int:
    try:
        engine = FareEngine(load_feed(args.feed))
        journey = json.loads(Path(args.legs).read_text(encoding="utf-8"))
        quote = engine.quote(legs_from_json(journey))
    except (FeedError, FareError) as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:  # an unreadable or non-JSON legs file
        return _fail(f"{args.legs}: {exc}")
    print(json.dumps(quote.as_json()))
    return 0


def cmd_load_feed(args: argparse.Namespace, make_app: AppFactory) -> int:
    from cloud import db as cloud_db
    from cloud.transit import cards

    try:
        load_feed(args.dir)  # checked before anything touches the database
    except FeedError as exc:
        return _fail(str(exc))
    app = make_app(args)
    with cloud_db.session(app) as db:
        try:
            feed = cards.store_feed(db, args.venue, args.dir, app.config["CLOCK"]())
        except cards.TransitError as exc:
            return _fail(str(exc))
        db.commit()
        print(json.dumps({"feed": feed.id, "venue_id": feed.venue_id, **feed.summary}))
    cloud_db.engine(app).dispose()
    return 0


def cmd_reader_claim(args: argparse.Namespace, make_app: AppFactory) -> int:
    from cloud import db as cloud_db
    from cloud.enrol import ClaimError
    from cloud.transit import cards

    app = make_app(args)
    with cloud_db.session(app) as db:
        try:
            code = cards.reader_claim(db, args.venue, args.route, args.label, app.config["CLOCK"]())
        except (ClaimError, cards.TransitError) as exc:
            return _fail(str(exc))
        db.commit()
    cloud_db.engine(app).dispose()
    print(code)
    return 0


def cmd_charge(args: argparse.Namespace, make_app: AppFactory) -> int:
    from cloud import db as cloud_db
    from cloud.transit import taps

    app = make_app(args)
    with app.app_context(), cloud_db.session(app) as db:
        result = taps.charge_pending(db, app.config["CLOCK"](), limit=args.limit)
    cloud_db.engine(app).dispose()
    print(json.dumps(result))
    return 0


def add_parser(sub: Any, make_app: AppFactory) -> None:
    """The `transit` command group, under plaza-cloud's subparsers."""
    transit = sub.add_parser("transit", help="GTFS fares, transit readers and charges")
    group = transit.add_subparsers(dest="transit_command", required=True)
    q = group.add_parser("quote", help="the fare of a journey as JSON (no database)")
    q.add_argument("feed", help="a GTFS feed directory")
    q.add_argument("--legs", required=True, help='JSON: {"legs": [{route_id, ...}]}')
    q.set_defaults(func=cmd_quote)
    lf = group.add_parser("load-feed", help="check a GTFS feed and make it the one that prices")
    lf.add_argument("dir")
    lf.add_argument("--venue", required=True, help="the agency's venue (its merchant is paid)")
    lf.set_defaults(func=lambda a: cmd_load_feed(a, make_app))
    rc = group.add_parser("reader-claim", help="a one-time enrolment code for a bus reader")
    rc.add_argument("venue")
    rc.add_argument("--route", required=True, help="the GTFS route_id the reader rides")
    rc.add_argument("--label", default="", help="e.g. the bus's fleet number")
    rc.set_defaults(func=lambda a: cmd_reader_claim(a, make_app))
    ch = group.add_parser("charge", help="price and charge the taps readers uploaded")
    ch.add_argument("--limit", type=int, default=10000)
    ch.set_defaults(func=lambda a: cmd_charge(a, make_app))
