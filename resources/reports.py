"""Links to the monitoring's Evidently reports that open from the Dagster UI, signed for ``aiflow serve`` to serve them."""

from dagster import ConfigurableResource, MetadataValue
from pydantic import Field

from aiflow.serving.reports import signed_url
from assets.metadata import uri_value


class ReportLinksResource(ConfigurableResource):
    """Where ``aiflow serve`` answers (``AIFLOW_REPORTS_URL``) and the key both sign with (``AIFLOW_REPORT_KEY``, a secret
    resolved as an ``EnvVar``); either unset: a report's metadata is its location as a path."""

    base_url: str | None = Field(None, description="The server's URL as a browser reaches it, e.g. https://aiflow.example.com.")
    key: str | None = Field(None, description="The signing key, shared with the server; from the environment, never in code.")

    def link(self, report_uri: str) -> MetadataValue:
        if self.base_url and self.key:
            return MetadataValue.url(signed_url(self.base_url, self.key, report_uri))
        return uri_value(report_uri)
