"""One Settings object for the whole platform (env prefix HOTLINE_, nested with __)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-in-production"


class SmtpSettings(BaseModel):
    host: str | None = None
    port: int = 25
    sender: str = "12345-noreply@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0


class WebhookSettings(BaseModel):
    url: str | None = None
    secret: str | None = None
    timeout_s: float = 5.0


class SlaSettings(BaseModel):
    sweep_batch: int = 500


class DispatchSettings(BaseModel):
    # Tickets no rule routes go to this unit; empty means the manual dispatch queue.
    fallback_unit_code: str | None = None


class WebSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = 8000
    public_url: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOTLINE_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str | None = None
    broker_url: str | None = None
    timezone: str = "Asia/Shanghai"
    secret_key: str = DEFAULT_SECRET

    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @model_validator(mode="after")
    def _refuse_unsafe_secrets(self) -> "Settings":
        if self.environment != "development" and self.secret_key == DEFAULT_SECRET:
            raise ValueError(
                f"HOTLINE_SECRET_KEY is still the default; set a long random secret "
                f"(environment {self.environment!r})"
            )
        if self.environment == "production" and len(self.secret_key) < 32:
            raise ValueError("HOTLINE_SECRET_KEY must be at least 32 characters in production")
        ZoneInfo(self.timezone)  # raises on an unknown zone name
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hotline.db').resolve()}"

    @property
    def broker(self) -> str:
        """The Celery broker: Redis in production, kombu's filesystem transport embedded."""
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache
def get_settings() -> Settings:
    return Settings()
