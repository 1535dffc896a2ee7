"""The webhook that announces drift, retrains, promotions, rollbacks and failed runs (Slack-compatible JSON)."""

from dagster import ConfigurableResource
from pydantic import Field

from aiflow.monitoring.notify import Notifier


class NotifierResource(ConfigurableResource):
    """A webhook URL (a secret: set it through ``EnvVar("AIFLOW_WEBHOOK_URL")``); unset, notifications are off."""

    url: str | None = Field(None, description="Incoming-webhook URL (Slack or compatible); from the environment, never in code.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds to wait for the receiver.")

    def notifier(self) -> Notifier:
        return Notifier(self.url or None, timeout=self.timeout_s)
