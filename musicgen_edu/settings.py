"""Service settings: one validated object read from a YAML file per environment + ``MUSICGEN_*``.

Where a value comes from, highest priority first (pydantic-settings sources)::

    load_settings(api_port=9000)          keyword overrides (tests, notebooks)
    MUSICGEN_API_PORT=9000                environment variables: MUSICGEN_ + the field name
    configs/<env>.yaml                    the profile's file; <env> = MUSICGEN_ENV (development)
    the defaults written below            each with its unit and allowed range

The YAML file is ``$MUSICGEN_CONFIG_FILE`` if set, else ``<env>.yaml`` in
``$MUSICGEN_CONFIG_DIR``, in ``./configs`` or in the repository's ``configs/`` folder; without
a file the defaults apply. Keys are the field names below, flat (``api_port: 8000``), so each
one has exactly one environment variable. An unknown key in the file, a ``MUSICGEN_*`` variable
that looks like a misspelt setting, or a bad value stops start-up with a
:class:`~musicgen_edu.errors.ConfigError`
naming the key, the value, where it came from and the allowed range. The production profile
refuses to start without API keys. Settings are read at the edges (``serve``, the CLI) and
passed inward as plain values (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import typing
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, YamlConfigSettingsSource

from .errors import ConfigError

__all__ = ["Settings", "ApiKey", "load_settings", "parse_api_keys", "config_path", "ROLES"]

ENV_PREFIX = "MUSICGEN_"
# MUSICGEN_* variables that choose the file rather than set a field
_FILE_VARIABLES = {"MUSICGEN_ENV", "MUSICGEN_CONFIG_FILE", "MUSICGEN_CONFIG_DIR"}
ROLES = ("viewer", "user", "admin")  # each role may do everything the ones before it may
_REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_Csv = Annotated[list[str], NoDecode]  # "a,b" in the environment, a list in YAML
_OTLP = "an http(s) URL such as http://localhost:4318, or unset (no tracing)"  # otel_endpoint


@dataclass(frozen=True)
class ApiKey:
    """One accepted API key. Jobs belong to ``owner``: keys sharing an owner see the same jobs."""

    key: str                        # the secret itself (never logged)
    role: str                       # viewer (read jobs), user (+ generate), admin (everything)
    owner: str                      # name the key's jobs are filed under, e.g. "lab1"


def parse_api_keys(text: str, where: str = "MUSICGEN_API_KEYS") -> list[ApiKey]:
    """Parse ``"key1:admin,key2:user:lab1"`` (or one entry per line) into :class:`ApiKey` s.

    Each entry is ``key:role`` or ``key:role:owner``; without an owner a key owns its own jobs
    (named ``key-`` + 8 hex digits of its SHA-256). Blank entries and ``#`` comments are skipped.
    """
    keys: list[ApiKey] = []
    entries = [e.strip() for line in text.splitlines()
               for e in line.split("#", 1)[0].split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
            raise ConfigError(f"{where}: entry {number} is not 'key:role' or 'key:role:owner' "
                              f"(got {len(parts)} part(s)); e.g. 's3cret:user:lab1'.")
        key, role = parts[0].strip(), parts[1].strip()
        if role not in ROLES:  # the value is not echoed: a swapped 'role:key' would print a key
            raise ConfigError(f"{where}: entry {number}: the second field must be a role, one of "
                              f"{list(ROLES)} (format 'key:role' or 'key:role:owner').")
        if len(key) < 8:
            raise ConfigError(f"{where}: entry {number} has a key of {len(key)} characters; use "
                              "at least 8 (e.g. python -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))').")
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:8]   # names it, reveals nothing
        owner = parts[2].strip() if len(parts) == 3 else f"key-{fingerprint}"
        keys.append(ApiKey(key, role, owner))
    if len({k.key for k in keys}) != len(keys):
        raise ConfigError(f"{where}: the same key is listed twice; each key needs one role.")
    return keys


def _mask_password(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (config show, logs)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


class Settings(BaseSettings):
    """Everything the service reads at start-up. Field name = YAML key = MUSICGEN_<NAME>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid",
                                      validate_default=True)

    env: Literal["development", "production"] = "development"  # profile; production needs keys
    # --- HTTP --------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"     # interface to bind; 0.0.0.0 listens on every interface
    api_port: int = Field(8000, ge=1, le=65535)       # TCP port
    cors_origins: _Csv = []         # browser origins allowed to call the API ("*" = any)
    max_body_bytes: int = Field(1_000_000, ge=1_024, le=100_000_000)  # JSON bodies; 413 above
    max_upload_bytes: int = Field(20_000_000, ge=1_024, le=2_000_000_000)  # audio/CSV uploads
    tls_certfile: Path | None = None  # PEM certificate (chain): serve HTTPS (with tls_keyfile)
    tls_keyfile: Path | None = None   # PEM private key of tls_certfile
    # --- models ------------------------------------------------------------------------------
    default_model: str = "edu-tiny"  # used when a request names none; loaded at start-up
    models: _Csv = ["edu-tiny", "debug", "debug-stereo", "debug-melody"]  # a request may choose
    device: str = "auto"            # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"             # auto, float32, float16, bfloat16
    backend: str = "native"         # native, native-int8, transformers
    cache_dir: Path | None = None   # hub weights cache (also read by load_model)
    model_memory_gb: float = Field(8.0, gt=0, le=1024)  # weights kept loaded; LRU unloaded past it
    # --- jobs --------------------------------------------------------------------------------
    storage_dir: Path = Path("musicgen_storage")  # audio files (+ the SQLite job store); with
    #                                               store=redis a volume every process mounts
    store: Literal["sqlite", "redis"] = "sqlite"  # jobs, result cache and rate limits: in one
    #                                               process (sqlite) or shared by many (redis)
    redis_url: str = "redis://127.0.0.1:6379/0"   # with store=redis; rediss:// for TLS
    redis_prefix: str = Field("musicgen", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # key namespace
    lease_s: float = Field(30.0, ge=1, le=3600)  # a worker's claim on a job, renewed every
    #                                             lease_s / 3; past it another worker re-runs it
    worker_port: int = Field(8001, ge=0, le=65535)  # musicgen-edu worker: /healthz, /readyz,
    #                                                 /metrics (0 = none)
    workers: int = Field(1, ge=0, le=16)  # generation threads; 0 = accept jobs, run none here
    max_batch_size: int = Field(8, ge=1, le=64)  # prompts decoded together (dynamic batching)
    batch_wait_s: float = Field(0.05, ge=0, le=10)  # wait for more requests before a batch
    max_queue: int = Field(100, ge=1, le=100_000)  # queued jobs; 503 past it
    max_duration: float = Field(30.0, gt=0, le=600)  # seconds of audio one request may ask
    max_prompts: int = Field(8, ge=1, le=64)  # prompts in one request
    result_cache: bool = True       # identical seeded requests reuse the earlier audio
    stream_chunk_s: float = Field(1.0, gt=0, le=30)  # seconds of audio per WebSocket chunk
    shutdown_grace_s: float = Field(10.0, ge=0, le=600)  # wait for running jobs, then re-queue
    max_attempts: int = Field(2, ge=1, le=100)  # runs a job may start; one the process died in
    #                                             after this many ends failed instead of re-queued
    upload_retention_s: float = Field(0.0, ge=0, le=31_536_000)  # keep an upload this long after
    #                                             its job ends (0 = delete it when the job ends)
    result_retention_s: float = Field(604_800.0, ge=0, le=315_360_000)  # keep finished jobs'
    #                                             audio this long (7 days; 0 = forever), then delete
    # --- security ----------------------------------------------------------------------------
    auth_enabled: bool | None = None  # require API keys; None: on exactly when keys are
    #                                   configured (always on in production)
    api_keys: SecretStr = SecretStr("")  # "key:role[:owner],..." (roles: viewer, user, admin)
    api_keys_file: Path | None = None  # same format, one entry per line
    rate_limit_per_minute: int = Field(120, ge=0, le=1_000_000)  # per key (or client); 0 = off
    rate_limit_burst: int = Field(30, ge=1, le=1_000_000)  # requests allowed back to back
    metrics_auth: bool = False      # /metrics needs an admin key (when auth is on)
    # --- logs --------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # prompts only at debug
    log_json: bool = True           # JSON lines (False: coloured console lines)
    otel_endpoint: str | None = Field(None, description=_OTLP)  # collector for spans; None: off

    @field_validator("otel_endpoint", mode="before")
    @classmethod
    def _otlp_url(cls, value):
        if value is None or value == "":      # MUSICGEN_OTEL_ENDPOINT= : off, like unset
            return None
        parts = urllib.parse.urlsplit(str(value))
        try:                                  # .port raises for a port out of range
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (
                parts.port is None or parts.port > 0)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("not an http(s) URL with a host: the OTLP/HTTP collector's "
                             "address, where spans go to /v1/traces")
        return str(value)

    @field_validator("cors_origins", "models", mode="before")
    @classmethod
    def _split(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.models:
            raise ValueError("models is empty; list at least one model name, e.g. ['debug']")
        if self.max_prompts > self.max_batch_size:
            raise ValueError(f"max_prompts={self.max_prompts} is larger than max_batch_size="
                             f"{self.max_batch_size}; one request must fit in one batch")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            given = "tls_certfile" if self.tls_keyfile is None else "tls_keyfile"
            raise ValueError(f"{given} is set but not its pair; HTTPS needs both tls_certfile "
                             "(the certificate) and tls_keyfile (its private key)")
        for name, path in (("tls_certfile", self.tls_certfile), ("tls_keyfile", self.tls_keyfile)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}={str(path)!r} is not a file; point it at a PEM file")
        if self.default_model not in self.models:
            raise ValueError(f"default_model={self.default_model!r} is not in models "
                             f"{self.models}; add it there or choose one of them")
        if self.env == "production":
            if self.auth_enabled is False:
                raise ValueError("auth_enabled=False is only allowed in the development "
                                 "profile; production requires API keys")
            if "*" in self.cors_origins:
                raise ValueError("cors_origins='*' is not allowed in production; list origins")
        configured = bool(self.keys())
        if self.auth_enabled is None:          # keys configured = keys required, in every profile
            self.auth_enabled = configured or self.env == "production"
        elif not self.auth_enabled and configured:
            raise ValueError("API keys are configured (api_keys or api_keys_file) but "
                             "auth_enabled=False would accept every request without one; remove "
                             "auth_enabled (keys then turn auth on) or remove the keys")
        if self.auth_enabled and not self.keys():
            raise ValueError("auth_enabled=True but no API keys are configured; set "
                             "MUSICGEN_API_KEYS='key:role,...' or MUSICGEN_API_KEYS_FILE")
        return self

    def keys(self) -> list[ApiKey]:
        """The API keys from ``api_keys`` and ``api_keys_file`` (parsed; ConfigError if bad)."""
        keys = parse_api_keys(self.api_keys.get_secret_value())
        if self.api_keys_file is not None:
            try:
                text = Path(self.api_keys_file).read_text()
            except OSError as exc:
                raise ConfigError(f"api_keys_file={str(self.api_keys_file)!r} cannot be read "
                                  f"({exc.strerror}); point MUSICGEN_API_KEYS_FILE at a file.") from None
            keys += parse_api_keys(text, where=str(self.api_keys_file))
        return keys

    def public(self) -> dict:
        """The effective settings as plain values, secrets masked (``config show``)."""
        out = self.model_dump(mode="json")
        keys = self.keys()
        out["api_keys"] = (f"*** ({len(keys)} key(s): " +
                           ", ".join(sorted({f'{k.owner}/{k.role}' for k in keys})) + ")"
                           if keys else "")
        out["redis_url"] = _mask_password(self.redis_url)
        return out

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        sources = [init_settings, env_settings]
        if _YAML_FILE is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=_YAML_FILE))
        return tuple(sources)


_YAML_FILE: Path | None = None  # set by load_settings while Settings reads its sources


def config_path(env: str) -> Path | None:
    """The YAML file for profile ``env``, or None (see the module docstring for the order)."""
    if os.environ.get("MUSICGEN_CONFIG_FILE"):
        path = Path(os.environ["MUSICGEN_CONFIG_FILE"])
        if not path.is_file():
            raise ConfigError(f"MUSICGEN_CONFIG_FILE={str(path)!r} does not exist; unset it or "
                              "point it at a YAML file.")
        return path
    folders = [Path(os.environ["MUSICGEN_CONFIG_DIR"])] if os.environ.get("MUSICGEN_CONFIG_DIR") \
        else [Path("configs"), _REPO_CONFIGS]
    return next((f / f"{env}.yaml" for f in folders if (f / f"{env}.yaml").is_file()), None)


def _allowed(name: str) -> str:
    """The allowed values of field ``name`` in words, from its annotation and constraints."""
    field = Settings.model_fields[name]
    if field.description:                # a field that says it in words (otel_endpoint)
        return field.description
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
    if choices:
        return f"one of {list(choices)}"
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata
              if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")}
    if bounds:
        low = "(" if "Gt" in bounds else "["
        high = ")" if "Lt" in bounds else "]"
        lo = bounds.get("Ge", bounds.get("Gt", "-inf"))
        hi = bounds.get("Le", bounds.get("Lt", "inf"))
        return f"{low}{lo}, {hi}{high}"
    return f"a value of type {getattr(field.annotation, '__name__', field.annotation)}"


def _source(name: str, path: Path | None, overrides: dict) -> str:
    if name in overrides:
        return "argument"
    if ENV_PREFIX + name.upper() in os.environ:
        return f"environment variable {ENV_PREFIX}{name.upper()}"
    return str(path) if path else "default"


def _explain(exc: ValidationError, path: Path | None, overrides: dict) -> str:
    lines = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            where = "arguments" if name in overrides else (path or "arguments")
            lines.append(f"unknown setting {name!r} (in {where}); known settings: "
                         f"{sorted(Settings.model_fields)}")
        elif name in Settings.model_fields:
            shown = "***" if name == "api_keys" else repr(value)
            lines.append(f"{name}={shown} (from {_source(name, path, overrides)}) is not "
                         f"allowed: {err['msg']}; allowed: {_allowed(name)}")
        else:  # a whole-object check (_consistent)
            lines.append(err["msg"].removeprefix("Value error, "))
    return "invalid settings: " + "; ".join(lines) + "."


def _check_variables() -> None:
    """A ``MUSICGEN_*`` variable that is no setting but looks like one (``MUSICGEN_API_PROT``)
    is a typo that would silently leave the default in place: refuse it, with a "did you mean".
    Other ``MUSICGEN_*`` names belong to other tools (tests, CI) and are left alone."""
    import difflib

    names = list(Settings.model_fields)
    typos = []
    for variable in sorted(os.environ):
        name = variable[len(ENV_PREFIX):].lower()
        if (variable.startswith(ENV_PREFIX) and variable not in _FILE_VARIABLES
                and name not in Settings.model_fields):
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
            if close:
                typos.append(f"{variable} (did you mean {ENV_PREFIX}{close[0].upper()}?)")
    if typos:
        raise ConfigError(f"unknown setting variable(s): {'; '.join(typos)}; the settings are "
                          f"{sorted(ENV_PREFIX + n.upper() for n in names)}.")


def load_settings(env: str | None = None, **overrides) -> Settings:
    """Read the settings for ``env`` (default ``$MUSICGEN_ENV`` or ``"development"``).

    Args:
        env: ``"development"`` or ``"production"``; picks ``configs/<env>.yaml``.
        **overrides: field values that win over the file and the environment.

    Raises:
        ConfigError: an unknown key, a ``MUSICGEN_*`` variable that looks like a misspelt
            setting, a bad value (the message names
            the key, the value, its source and the allowed range), or unreadable API keys.
    """
    global _YAML_FILE
    env = env or os.environ.get("MUSICGEN_ENV") or "development"
    if env not in ("development", "production"):
        raise ConfigError(f"MUSICGEN_ENV={env!r} is not a profile; allowed: "
                          "['development', 'production'].")
    _check_variables()
    path = config_path(env)
    _YAML_FILE = path
    try:
        settings = Settings(**{"env": env, **overrides})
        settings.keys()  # parse now: a bad key file fails at start-up, not at the first request
        return settings
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, overrides)) from None
    finally:
        _YAML_FILE = None
