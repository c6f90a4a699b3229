"""The API docs pages work offline: every asset they load is served by the service itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from reidnet.service.app import create_app
from reidnet.service.settings import ServiceSettings

ASSET_REFERENCE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?'([^']+)'""")


@pytest.fixture()
def client(tmp_path):
    return TestClient(create_app(ServiceSettings(data_dir=tmp_path)))


@pytest.mark.parametrize(
    ("page", "scripts"),
    [
        ("/docs", {"/docs-assets/swagger-ui-bundle.js"}),
        ("/redoc", {"/docs-assets/redoc.standalone.js"}),
    ],
)
def test_docs_pages_reference_only_local_assets_and_each_is_served(client, page, scripts):
    response = client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    references = {m.group(1) or m.group(2) for m in ASSET_REFERENCE.finditer(html)}
    assert scripts <= references
    assert "/openapi.json" in references
    for url in references:
        assert url.startswith("/") and not url.startswith("//"), url
        served = client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 100, url
    bundle = client.get(next(iter(scripts)))
    assert "javascript" in bundle.headers["content-type"]
    assert len(bundle.content) > 500_000  # the real bundle, not a placeholder


def test_swagger_oauth2_redirect_page_is_served(client):
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200 and "oauth2" in response.text.lower()
