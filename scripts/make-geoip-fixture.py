#!/usr/bin/env python3
"""Writes api/tests/fixtures/geoip-test.mmdb: a tiny GeoIP2-City-shaped
database for the location tests. Run once; the output is committed.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install mmdb-writer netaddr
    /tmp/v/bin/python scripts/make-geoip-fixture.py
"""
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

out = Path(__file__).resolve().parent.parent / "api/tests/fixtures/geoip-test.mmdb"
w = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)
w.insert_network(
    IPSet(["56.78.90.0/24"]),
    {"city": {"names": {"en": "New York"}}, "country": {"iso_code": "US", "names": {"en": "USA"}}},
)
w.insert_network(
    IPSet(["81.2.69.0/24"]),
    {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}}},
)
w.to_db_file(str(out))
print(out)
