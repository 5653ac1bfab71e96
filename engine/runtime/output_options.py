"""The ``outputs:`` section of a pipeline file (SPEC §2b, §4, §9): the PUB socket and the JSONL sink."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CurveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret_key: str = Field(description="the publisher's secret key file (`avstream keys`: server.key_secret)")
    clients: str = Field(description="folder of the public keys (*.key) of the subscribers let in")


class PublishOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field("tcp://127.0.0.1:5560", description="ZeroMQ PUB endpoint the results go to")
    curve: CurveOptions | None = Field(None, description="CURVE authentication and encryption (SPEC §9)")
    insecure: bool = Field(False, description="allow publishing unauthenticated on a non-loopback tcp endpoint")
    wait_for_subscribers: int = Field(0, ge=0, description="wait for this many subscribers before the first result")
    wait_timeout_s: float = Field(10.0, gt=0, description="give up waiting for subscribers after this long")


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="file to append results to, one JSON object per line; '-' for stdout")
    fsync: str = Field("batch", pattern="^(line|batch)$", description="fsync after every line or per batch")


class OutputsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    publish: PublishOptions = Field(default_factory=lambda: PublishOptions())
    jsonl: JsonlOptions | None = None
