"""Evidently reports behind signed links, served by a real ``aiflow serve`` over HTTP: the link the Dagster UI shows
opens the report with no bearer token; a wrong or missing signature, another report's signature, a path outside the
reports folder, or a server without the key is refused; the key never reaches the server's log."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiflow.serving.reports import report_path, signature, signed_url, verify
from resources.reports import ReportLinksResource

KEY = "k3y-for-the-reports-only-0123456789"


def put_report(home, name: str, body: str) -> str:
    folder = home.lake.root.rstrip("/") + "/monitoring/trips/reports"
    import pathlib

    pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(folder) / name).write_text(body)
    return f"{folder}/{name}"


def test_a_signed_link_opens_the_report_and_nothing_else_does(home, serve):
    uri = put_report(home, "online-2013-04-01-v1.html", "<html><body>drift of week 2013-04-01</body></html>")
    put_report(home, "online-2013-04-08-v1.html", "<html>another week</html>")
    server = serve(home, env={"AIFLOW_REPORT_KEY": KEY})
    link = ReportLinksResource(base_url=server.url, key=KEY).link(uri).value
    assert link.startswith(f"{server.url}/reports/trips/online-2013-04-01-v1.html?sig=")
    opened = httpx.get(link)  # no Authorization header: what a browser does with a link
    assert opened.status_code == 200 and "drift of week 2013-04-01" in opened.text and opened.headers["content-type"].startswith("text/html")
    sig = link.split("sig=")[1]
    assert httpx.get(f"{server.url}/reports/trips/online-2013-04-08-v1.html?sig={sig}").status_code == 403  # another report
    assert httpx.get(f"{server.url}/reports/trips/online-2013-04-01-v1.html").status_code == 403  # no signature
    assert httpx.get(f"{server.url}/reports/trips/online-2013-04-01-v1.html?sig={sig[:-1]}0").status_code == 403
    for path in ("/reports/trips/..%2F..%2Fregistry%2Fmodel_versions", "/reports/trips/model.pt", "/reports/..%2Flake/x.html"):
        assert httpx.get(server.url + path + f"?sig={sig}").status_code == 404, path
    missing = signed_url(server.url, KEY, "/x/monitoring/trips/reports/online-1999-01-04-v1.html")
    assert httpx.get(missing).status_code == 404
    server.stop()
    assert KEY not in server.output()


def test_a_server_without_the_key_serves_no_report(home, serve):
    uri = put_report(home, "online-2013-04-01-v1.html", "<html>x</html>")
    server = serve(home)
    answer = httpx.get(signed_url(server.url, KEY, uri))
    assert answer.status_code == 404 and "AIFLOW_REPORT_KEY" in answer.text
    # and Dagster without a key shows the location as a path (nothing to sign with)
    assert ReportLinksResource(base_url=server.url).link(uri).value == uri


@settings(max_examples=200, deadline=None)
@given(dataset=st.text(min_size=1, max_size=30), name=st.text(min_size=1, max_size=60))
def test_generated_names_are_either_a_report_under_the_reports_folder_or_refused(dataset, name):
    try:
        path = report_path(dataset, name)
    except ValueError:
        return
    assert path.startswith(f"monitoring/{dataset}/reports/") and path.endswith(".html") and ".." not in path.split("/")
    assert "/" not in name and "/" not in dataset and verify(KEY, dataset, name, signature(KEY, dataset, name))
    assert not verify(None, dataset, name, signature(KEY, dataset, name)) and not verify(KEY, dataset, name, None)


@pytest.mark.parametrize("bad", ["../x.html", "a/b.html", ".hidden.html", "x.htm", "x.html/"])
def test_report_names_that_could_escape_are_refused(bad):
    with pytest.raises(ValueError):
        report_path("trips", bad)
