"""Typed settings: one TOML file, then `HYBRID_ROUTER_*` environment variables, validated once at start-up.

Every field's default and description here is mirrored in the README's configuration table.
Environment variables name a nested key with a double underscore: `HYBRID_ROUTER_EDGE__N_THREADS=4`
sets `[edge] n_threads`. The environment wins over the file. Nothing else in the project reads the
environment: `load_settings` is handed it explicitly.
"""
from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from router.domain.types import Mode

ENV_PREFIX = "HYBRID_ROUTER_"
CONFIG_FILE_ENV = "HYBRID_ROUTER_CONFIG"


def _plaintext_beyond_loopback(url: str) -> bool:
    """An http:// URL whose host is not this machine."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class ConfigError(Exception):
    """Start-up refused: the message names the offending key and where it came from."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class ServerSettings(_Section):
    listen: str = Field("127.0.0.1:50051", description="host:port, or unix:/path/to/socket. Loopback by default.")
    grace_period_s: float = Field(10.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    shutdown_flush_s: float = Field(
        5.0, gt=0, description="After the grace period, the time left to cancel what still runs, flush the "
        "ledger and judge, and stop the stand-in and the edge: SIGTERM to exit takes at most "
        "grace_period_s + shutdown_flush_s.")
    max_request_bytes: int = Field(1_048_576, gt=0, description="Largest serialized request accepted.")
    default_mode: str = Field("edge_only", description="Mode used when a request leaves mode unset.")
    default_max_tokens: int = Field(256, gt=0, description="max_tokens when a request leaves it unset.")
    max_tokens_limit: int = Field(4096, gt=0, description="Largest max_tokens a request may ask for.")
    default_temperature: float = Field(0.0, ge=0, description="temperature when a request leaves it unset.")
    max_temperature: float = Field(2.0, ge=0, description="Largest temperature a request may ask for.")
    max_messages: int = Field(256, gt=0, description="Most chat messages in one request.")
    tls_cert_file: Optional[Path] = Field(None, description="PEM certificate chain the server presents (TLS). "
                                          "Required, with tls_key_file, to listen on any address but loopback.")
    tls_key_file: Optional[Path] = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Optional[Path] = Field(
        None, description="PEM CA bundle: when set, every client must present a certificate it signed (mTLS), "
        "and a certificate whose common name matches a principal's `cert_cn` authenticates as that principal.")

    @model_validator(mode="after")
    def _check(self) -> "ServerSettings":
        Mode.parse(self.default_mode)
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        if self.default_temperature > self.max_temperature:
            raise ValueError("default_temperature must not exceed max_temperature")
        return self


class AuthSettings(_Section):
    """Who may call (router/core/auth/, README "Security")."""

    mode: Literal["token", "none"] = Field(
        "token", description="token: every call carries `authorization: Bearer <token>` (or a client certificate "
        "under mTLS) that principals_file knows. none: no authentication: every caller is an admin, reads the groups "
        "its request names (none named: public documents only) and is the caller.user it sends; allowed only on "
        "loopback and unix sockets, and only when set explicitly.")
    principals_file: Path = Field(
        Path("~/.local/state/hybrid-router/principals.toml"),
        description="The principals: name, role (user | admin | service), groups, and the SHA-256 of each token "
        "(never the token). Created 0600 with the local admin on first start; `hybrid-router token issue` adds "
        "to it. Re-read when it changes, so issuing or revoking needs no restart.")
    local_token_file: Path = Field(
        Path("~/.local/state/hybrid-router/admin.token"),
        description="The local admin's token, written 0600 on first start; the CLI and SDK on this machine read "
        "it when no token is given.")


class LimitsSettings(_Section):
    """Admission (router/core/admission.py): what is refused at once with RESOURCE_EXHAUSTED, never left to wait."""

    max_concurrent_requests: int = Field(64, gt=0, description="Generate calls running at once, all principals.")
    max_queued_per_backend: int = Field(
        32, ge=0, description="Calls waiting for a busy backend (the edge runs one at a time; the cloud "
        "cloud.max_concurrency); one more is refused at once.")
    per_principal_concurrency: int = Field(16, gt=0, description="Generate calls one principal may run at once.")
    per_principal_rate_per_s: float = Field(100.0, gt=0, description="Sustained Generate calls a second per principal "
                                            "(a token bucket): far above what the edge answers, it stops a runaway "
                                            "client, not a busy one.")
    per_principal_burst: int = Field(200, gt=0, description="Calls a principal may make at once above the rate.")


class BudgetSettings(_Section):
    """Cloud dollars (router/core/budget.py), counted from the ledger's own prices, so they survive a restart.
    Unset: no limit. Days and months are UTC calendar days and months."""

    principal_daily_usd: Optional[float] = Field(None, ge=0, description="Cloud spend one principal may make a day.")
    principal_monthly_usd: Optional[float] = Field(None, ge=0, description="Cloud spend one principal may make a month.")
    total_daily_usd: Optional[float] = Field(None, ge=0, description="Cloud spend of all principals together a day.")
    total_monthly_usd: Optional[float] = Field(None, ge=0, description="Cloud spend of all principals a month.")
    when_spent: Literal["degrade", "refuse"] = Field(
        "degrade", description="A cloud-bound request once a budget is spent. degrade: the edge answers and the "
        "decision says `degraded: budget`. refuse: RESOURCE_EXHAUSTED naming the budget.")


class BreakerSettings(_Section):
    """The cloud's circuit breaker (router/core/breaker.py)."""

    failures_to_open: int = Field(5, gt=0, description="Consecutive failed cloud calls that open the breaker.")
    cooldown_s: float = Field(30.0, gt=0, description="How long it stays open before one trial call (half-open).")
    when_open: Literal["degrade", "fail"] = Field(
        "degrade", description="Cloud-capable requests while it is open. degrade: the edge answers, marked "
        "degraded. fail: UNAVAILABLE at once.")


class PrivacySettings(_Section):
    """What leaves the device (router/core/privacy/)."""

    cloud_egress: Literal["allow", "redact", "edge_only"] = Field(
        "allow", description="allow: requests reach the cloud as sent. redact: personal data found on the device "
        "(e-mail, phone, card, IBAN, national ids, API keys, street addresses) is replaced by stable placeholders "
        "([EMAIL_1]) before any cloud call, and restored in the cloud's answer. edge_only: a request that holds "
        "personal data never reaches the cloud, whatever its mode; the edge answers and the decision says why.")


class ModelsSettings(_Section):
    cache_dir: Path = Field(Path("~/.cache/hybrid-router/models"),
                            description="Where `models pull` keeps assembled, verified model files.")
    adapters_dir: Path = Field(Path("~/.cache/hybrid-router/adapters"),
                               description="Where the edge's LoRA adapter versions are kept, a folder per base "
                               "model (`hybrid-router adapter list`).")


class EdgeSettings(_Section):
    kind: Literal["llama", "fault-injection"] = Field(
        "llama", description="llama: the llama.cpp model. fault-injection: a fixed-latency stand-in for benches.")
    fault_injection_latency_s: float = Field(0.005, ge=0, description="Latency of the fault-injection edge.")
    model: str = Field("qwen2.5-coder-0.5b", description="Catalogue name of the edge model.")
    model_path: Optional[Path] = Field(None, description="A GGUF file to use instead of the catalogue model.")
    n_ctx: int = Field(4096, gt=0, description="Edge context window in tokens (prompt + completion).")
    n_threads: int = Field(2, gt=0, description="CPU threads for the edge model.")
    n_batch: int = Field(512, gt=0, description="Prompt-processing batch size.")
    adapter: str = Field(
        "active", pattern=r"^(active|none|v[0-9]{4,})$",
        description="The LoRA adapter the edge starts with, from the adapter store (models.adapters_dir, "
        "`hybrid-router adapter list`): active (the version `hybrid-router adapter use` chose last; the base "
        "model alone if none was), none (the base model alone), or a version such as v0003.")
    adapter_scale: float = Field(1.0, gt=0, le=4, description="Multiplies the adapter's effect (llama.cpp's LoRA "
                                 "scale); 1 is what it was trained and checked at.")
    stream_flush_interval_s: float = Field(
        0.1, ge=0, le=1, description="After the first token, streamed edge tokens reach the client at most "
        "this often, merged into one delta (fewer wake-ups beside the decode threads); 0 sends every token.")
    joules_per_flop: float = Field(7e-10, gt=0, description="Device energy per FLOP, for the edge cost estimate.")
    usd_per_kwh: float = Field(0.15, ge=0, description="Price of electricity, for the edge cost estimate.")


class CloudSettings(_Section):
    base_url: Optional[str] = Field(None, description="OpenAI-compatible endpoint. Unset with no api_key: the local stand-in.")
    api_key: Optional[SecretStr] = Field(None, description="Cloud API key. Never logged or stored.")
    model: str = Field("gpt-4o-mini", description="Cloud model, and the model the stand-in is priced as.")
    timeout_s: float = Field(120.0, gt=0, description="Longest wait for the cloud to connect or send the next bytes (not a cap on the whole answer).")
    max_retries: int = Field(2, ge=0, description="Retries of a failed cloud request (backoff honours Retry-After).")
    max_concurrency: int = Field(8, gt=0, description="Cloud requests in flight at once.")
    input_usd_per_mtok: float = Field(0.15, ge=0, description="Price per million prompt tokens.")
    output_usd_per_mtok: float = Field(0.60, ge=0, description="Price per million completion tokens.")

    @model_validator(mode="after")
    def _check(self) -> "CloudSettings":
        if self.api_key is not None and self.base_url is not None and _plaintext_beyond_loopback(self.base_url):
            raise ValueError("base_url is plain http:// to a host beyond loopback, so api_key would travel in clear: "
                             "use https://")
        return self

    @property
    def uses_standin(self) -> bool:
        return self.base_url is None and self.api_key is None


class StandinSettings(_Section):
    model: str = Field("qwen2.5-coder-1.5b", description="Catalogue name of the local cloud stand-in's model.")
    model_path: Optional[Path] = Field(None, description="A GGUF file to serve instead of the catalogue model.")
    n_ctx: int = Field(4096, gt=0, description="Stand-in context window.")
    n_threads: int = Field(2, gt=0, description="CPU threads for the stand-in.")
    n_batch: int = Field(512, gt=0, description="Stand-in prompt batch size.")
    startup_timeout_s: float = Field(180.0, gt=0, description="How long to wait for the stand-in to become healthy.")


class LedgerSettings(_Section):
    enabled: bool = Field(True, description="Record every request in the SQLite ledger.")
    path: Path = Field(Path("~/.local/share/hybrid-router/ledger.db"), description="Ledger database file.")
    log_content: Literal["full", "redacted", "none"] = Field("full", description="How much request text is stored.")
    queue_size: int = Field(10_000, gt=0, description="Writes queued before new ones are dropped.")
    batch_size: int = Field(256, gt=0, description="Rows per commit.")
    flush_interval_s: float = Field(0.05, gt=0, description="Longest wait before a partial batch is committed.")
    judge_sample_rate: float = Field(0.0, ge=0, le=1, description="Share of edge answers the cloud grades.")
    retention_days: Optional[float] = Field(None, gt=0, description="Requests older than this are deleted by the "
                                            "writer (with their runs, signals and Info calls). Unset: kept.")
    retention_max_bytes: Optional[int] = Field(None, gt=0, description="The oldest requests are deleted while the "
                                               "database is larger than this. Unset: no cap.")


# The one list of each: config validation, the builders (router/core/arbiters/) and the errors read these.
ArbiterName = Literal["cascade", "parallel", "early", "shadow"]
ScorerName = Literal["logprob", "task", "consistency", "verify", "rule", "all", "learned", "probe"]


ThresholdKind = Literal["fixed", "target_share", "target_accuracy"]


class _ThresholdKeys(_Section):
    """The threshold's keys, the same in [arbitration] and [routing] (router/core/arbiters/thresholds.py);
    each section adds `threshold`, its kind, with its own default."""

    fixed_threshold: float = Field(0.5, ge=0, le=1, description="threshold = fixed: the score at which the edge "
                                   "is kept (arbitration) or chosen (routing).")
    target_cloud_share: float = Field(0.3, gt=0, lt=1, description="threshold = target_share: the share of "
                                      "requests the cloud should answer.")
    target_accuracy: float = Field(0.6, gt=0, le=1, description="threshold = target_accuracy: the mean quality "
                                   "served (1/0 for numeric answers, token F1 for text) to reach.")
    window: int = Field(500, gt=0, description="Recent scores the target_share threshold is calibrated on.")
    min_samples: int = Field(20, gt=0, description="Scores seen before target_share calibrates; until then "
                             "fixed_threshold applies.")

    def _check_thresholds(self, has_calibration: bool, needs: str) -> None:
        if self.min_samples > self.window:
            raise ValueError("min_samples must not exceed window")
        if getattr(self, "threshold") == "target_accuracy" and not has_calibration:
            raise ValueError(f"threshold = target_accuracy needs {needs}: its calibration table, measured on "
                             "held-out items, says which threshold reaches the accuracy")


class ArbitrationSettings(_ThresholdKeys):
    arbiter: ArbiterName = Field(
        "cascade", description="POST_ARBITRATION's arbiter. cascade: the edge answers, the cloud when the score is "
        "below the threshold. parallel: both start at once; the cloud is cancelled when the edge's answer is "
        "kept. early: a cascade that stops the edge as soon as its running confidence falls below "
        "early_threshold. shadow: the cloud answers every request and every scorer's features are recorded "
        "(labelling).")
    scorer: ScorerName = Field(
        "probe", description="How the edge answer is scored (router/core/arbiters/scorers.py); rule is the default rule. "
        "learned: the trained deferral model in model_dir (router/core/arbiters/learned.py). probe: the draft probe "
        "on the edge's hidden state (probe_dir; router/core/probes/), which asks the edge nothing more.")
    probe_dir: Optional[Path] = Field(None, description="scorer = probe: a draft probe, the vNNNN directory that "
                                      "`hybrid-router train-probe --at draft` wrote for this edge model. Unset: the "
                                      "probe shipped for the default edge model; on another edge the default rule "
                                      "scores, and every decision's scorer says why.")
    fixed_threshold: float = Field(0.36, ge=0, le=1, description="threshold = fixed: the score at which the edge is "
                                   "kept. 0.36: the shipped draft probe's operating point, about 30% of requests "
                                   "to the cloud (bench/results/arbitration/auto_bands.json).")
    model_dir: Optional[Path] = Field(None, description="scorer = learned: the model directory that "
                                      "`hybrid-router train-arbiter` wrote (a vNNNN directory with model.onnx and "
                                      "meta.json).")
    missing_model: Literal["error", "rule"] = Field(
        "error", description="scorer = learned with model_dir unset, missing or invalid, or scorer = probe with "
        "probe_dir set and unusable (trained for another edge model): error stops the daemon at start-up; rule "
        "scores with the default rule, and every decision's scorer says why.")
    threshold: ThresholdKind = Field(
        "fixed", description="fixed: keep the edge when score >= fixed_threshold. target_share: the threshold "
        "follows recent scores so that about target_cloud_share of requests reach the cloud. target_accuracy "
        "(scorer = learned): the lowest threshold whose quality served, on the model's held-out split, reaches "
        "target_accuracy.")
    samples: int = Field(3, ge=1, le=16, description="Self-consistency samples (T=0.7) for answers that end in a number.")
    shadow_features: Literal["all", "draft"] = Field(
        "all", description="shadow: which features are recorded. all: every scorer's (samples and verification "
        "included). draft: only those read from the draft itself, so an item costs the edge's answer and the "
        "cloud's (cheap labelling).")
    early_threshold: float = Field(0.7, ge=0, le=1, description="early: the running confidence (geometric-mean "
                                   "token probability over early_window tokens) below which the edge is stopped. 0.7: "
                                   "on 31 GSM8K corpus items it fired on 13, 12 of them wrong answers, 78 tokens in "
                                   "(bench/results/arbitration_early.md); at 0.4 it never fired.")
    early_window: int = Field(16, gt=0, description="early: how many recent tokens the running confidence covers.")
    stream_draft: bool = Field(True, description="Stream the edge's draft; a DraftDiscarded event replaces it "
                               "when the cloud answers.")

    @model_validator(mode="after")
    def _check(self) -> "ArbitrationSettings":
        self._check_thresholds(self.scorer == "learned" or self.arbiter == "shadow", "scorer = learned")
        return self


class RoutingSettings(_ThresholdKeys):
    """PRE_ARBITRATION's router (router/core/routing/): it picks the edge or the cloud before generating."""

    model_dir: Optional[Path] = Field(None, description="The trained router: a vNNNN directory that `hybrid-router "
                                      "train-router` wrote. Unset: the default rule routes, and every decision's "
                                      "scorer says so. Set but unusable: the daemon refuses to start, naming the file.")
    decide_at: Literal["request", "prefill"] = Field(
        "request", description="request: the router (model_dir, else the default rule) decides from the request's "
        "text before the edge runs. prefill: the prefill probe (probe_dir) decides from the edge's hidden state "
        "after the edge has read the prompt; a request it keeps reuses that prefill, one it sends to the cloud "
        "has paid for it. While that probe is stale (the edge runs another adapter than it was trained with), the "
        "request's text decides, as under request.")
    probe_dir: Optional[Path] = Field(None, description="decide_at = prefill (and AUTO): a prefill probe, the vNNNN "
                                      "directory that `hybrid-router train-probe --at prefill` wrote for this edge "
                                      "model. Unset: the probe shipped for the default edge model. Unusable (another "
                                      "edge model's): the daemon refuses to start, naming both models.")
    threshold: ThresholdKind = Field(
        "target_share", description="fixed: the edge when score >= fixed_threshold. target_share: the threshold "
        "follows recent scores so that about target_cloud_share of requests go to the cloud. target_accuracy (a "
        "trained router): the lowest threshold whose quality, on the router's held-out split, reaches "
        "target_accuracy.")

    @model_validator(mode="after")
    def _check(self) -> "RoutingSettings":
        self._check_thresholds(self.model_dir is not None, "model_dir (a trained router)")
        return self


class AutoSettings(_Section):
    """AUTO (router/core/probes/auto.py): after the edge's prefill, the prefill probe (routing.probe_dir) picks
    the cloud alone, the edge alone, or the cascade, whose draft probe (arbitration.probe_dir) keeps the draft
    or asks the cloud. Served when both probes fit the edge model; the shipped ones fit the default edge."""

    cloud_below: float = Field(0.0, ge=0, le=1, description="The prefill probe's score below which the cloud "
                               "answers at once (the edge generates nothing). 0: never, the bands chosen out of fold "
                               "on the train split (bench/results/arbitration/auto_bands.json).")
    edge_above: float = Field(0.44, ge=0, le=1, description="The prefill probe's score at or above which the edge "
                              "answers alone, reusing its prefill, and its answer is never discarded. 0.44: the "
                              "shipped prefill probe's top tenth on the train split.")
    threshold: Literal["fixed", "target_share"] = Field(
        "fixed", description="The cascade's threshold on the draft probe's score (between the bands). fixed: the "
        "edge's draft is kept when its score >= fixed_threshold. target_share: the threshold follows recent draft "
        "scores so that about target_cloud_share of the cascaded requests go to the cloud.")
    fixed_threshold: float = Field(0.35, ge=0, le=1, description="threshold = fixed: the draft probe's score at "
                                   "which the cascade keeps the edge's draft. 0.35: about 30% of the cascaded "
                                   "requests to the cloud on the train split.")
    target_cloud_share: float = Field(0.3, gt=0, lt=1, description="threshold = target_share: the share of the "
                                      "cascaded requests the cloud should answer.")
    window: int = Field(500, gt=0, description="Recent draft scores the target_share threshold is calibrated on.")
    min_samples: int = Field(20, gt=0, description="Draft scores seen before target_share calibrates; until then "
                             "fixed_threshold applies.")

    @model_validator(mode="after")
    def _check(self) -> "AutoSettings":
        if self.min_samples > self.window:
            raise ValueError("min_samples must not exceed window")
        if self.cloud_below > self.edge_above:
            raise ValueError(f"cloud_below ({self.cloud_below}) must not exceed edge_above ({self.edge_above})")
        return self


class InfoSettings(_Section):
    """The Info service (cloud side, `cloud/info/`): passages for EDGE_RAG_CLOUD_INFO and the agent's search."""

    service: Literal["in_process", "remote", "off"] = Field(
        "in_process", description="in_process: the daemon hosts the Info service on its own port and talks to it "
        "through the same gRPC client as a remote one. remote: `hybrid-router info serve` at address. off: no "
        "Info service; the modes that need one answer from the edge alone, marked degraded.")
    address: str = Field("", description="service = remote: host:port of the Info service.")
    index_dir: Path = Field(Path("~/.local/share/hybrid-router/info"),
                            description="Where the Info service keeps its index (reloaded at start-up): engine = "
                            "postgres keeps its embedded server's data in index_dir/pg.")
    engine: Literal["postgres", "files"] = Field(
        "postgres", description="The index's engine. postgres: PostgreSQL with pgvector (cloud/info/pg_index.py), "
        "embedded (a private server under index_dir, started and stopped with this process, on a Unix socket "
        "only) unless dsn names a server. files: the hand-written index (cloud/info/index.py), one directory "
        "rewritten whole on each change; for a device without PostgreSQL. `hybrid-router info migrate` copies "
        "one engine's index into the other.")
    dsn: str = Field("", description="engine = postgres: a PostgreSQL server's URI (postgresql://user@host:5432/db) "
                     "instead of the embedded one, the one switch to server mode. The server needs pgvector. The first "
                     "open creates only what the database lacks: the role info_index_reader (CREATEROLE), the `vector` "
                     "extension (a superuser) and the schema info_index (CREATE on the database); after that a user "
                     "with CONNECT, USAGE on info_index, SELECT on info_index.meta, SELECT/INSERT/UPDATE/DELETE on "
                     "info_index.chunks and membership in info_index_reader (WITH SET TRUE on PostgreSQL 16) is "
                     "enough, and a read replica opens for retrieval. Keep the password out of this file: libpq reads "
                     "PGPASSWORD and ~/.pgpass.")
    encoder: str = Field("use-multilingual-512", description="Catalogue name of the dense text encoder.")
    timeout_s: float = Field(2.0, gt=0, description="Longest wait for one retrieval; past it the mode answers "
                             "without passages, marked degraded.")
    token_file: Optional[Path] = Field(None, description="service = remote: a file holding the daemon's own token for "
                                       "the Info service (a `service` principal there). Unset: no token sent.")
    tls_ca_file: Optional[Path] = Field(None, description="service = remote: PEM CA that signed the Info service's "
                                        "certificate. Set: the daemon connects with TLS.")
    price_per_retrieval_usd: float = Field(
        0.000002, ge=0, description="What one retrieval call costs, recorded in the result and the ledger. The "
        "default prices a self-hosted index: a query takes ~2 ms of CPU (bench/results/retrieval_tuning.md), about "
        "$2e-8 on a $0.04/h vCPU, and the default allows 100 times that for the host's memory, disk and idle "
        "time. A managed vector database charges more (often $0.00005 to $0.0001 a query): set its price.")
    k: int = Field(3, ge=1, le=50, description="Passages retrieved per request.")
    answer_style: Literal["free", "span"] = Field(
        "free", description="EDGE_RAG_CLOUD_INFO's reader. free: the request's own instructions. span: the edge is "
        "asked for the shortest exact span of a passage, with one worked example (extractive question answering).")
    focus_sentences: int = Field(
        2, ge=0, le=50, description="What the edge reads of the retrieved passages (EDGE_RAG_CLOUD_INFO, and the "
        "agent's search results): the N sentences that share the most words with the question, the best-ranked "
        "passage winning ties (router/core/modes/rag_focus.py). 0: the passages whole. The 0.5B edge reads a "
        "short context far better (bench/results/rag-reader/summary.md).")
    chunk_tokens: int = Field(200, ge=16, le=4096, description="Largest chunk, in tokens (words and punctuation).")
    chunk_overlap_tokens: int = Field(40, ge=0, description="Tokens shared by neighbouring chunks.")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of the BM25 ranking in the fusion.")
    dense_weight: float = Field(0.3, ge=0, description="Weight of the dense (encoder) ranking in the fusion.")
    rrf_k: int = Field(5, ge=1, description="Reciprocal rank fusion's k: weight / (k + rank). 5 (tuned on SQuAD, "
                       "bench/results/retrieval_tuning.md) lets the top ranks count far more than 60 would.")
    rerank: bool = Field(True, description="Re-rank the fused candidates by query-term coverage, bigrams and "
                         "sentence-level similarity (cloud/info/ranking.py).")

    @model_validator(mode="after")
    def _check(self) -> "InfoSettings":
        if self.service == "remote" and not self.address:
            raise ValueError("service = remote needs address (host:port of `hybrid-router info serve`)")
        if (self.service == "remote" and self.token_file is not None and self.tls_ca_file is None
                and _plaintext_beyond_loopback(f"http://{self.address}")):
            raise ValueError("service = remote with token_file needs tls_ca_file for an address beyond loopback: "
                             "the daemon's token would travel in clear")
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_tokens")
        if self.dsn and self.engine != "postgres":
            raise ValueError(f"dsn names a PostgreSQL server, but engine = {self.engine!r}: set engine = \"postgres\" "
                             "or remove dsn")
        if self.bm25_weight == 0 and self.dense_weight == 0:
            raise ValueError("bm25_weight and dense_weight cannot both be 0")
        return self


class AgentSettings(_Section):
    """EDGE_AGENT_CLOUD_INFO: the edge runs a bounded tool loop (search, ask_cloud, calculate)."""

    max_steps: int = Field(4, ge=1, le=32, description="Most tool-loop steps (edge generations) per request.")
    max_tokens: int = Field(1024, ge=16, description="Most edge tokens the loop may generate, over all its steps.")
    max_usd: float = Field(0.01, gt=0, description="Most dollars a request's loop may spend on tools (cloud "
                           "calls, retrievals) and edge energy: once spending reaches it, no tool is called again and "
                           "one last edge step (a few micro-dollars) must answer.")
    max_wall_s: float = Field(120.0, gt=0, description="Longest a request's loop may run; no step starts after it.")
    step_max_tokens: int = Field(256, ge=16, description="Most tokens of one step (a thought and a tool call).")
    ask_cloud_max_tokens: int = Field(256, ge=1, description="Most tokens of one ask_cloud answer.")
    search_k: int = Field(3, ge=1, le=20, description="Passages one search returns.")
    observation_max_chars: int = Field(1500, ge=100, description="Longest tool result shown to the edge; "
                                       "longer ones are cut.")
    read_search_results: bool = Field(
        True, description="When the edge answers and the last tool that worked was a search, the served answer is "
        "written by EDGE_RAG_CLOUD_INFO's reader over the passages the loop's searches found (one more edge call), "
        "not taken from the step's JSON: inside a step the 0.5B edge copies a sentence of the observation or a word "
        "of the worked examples. false: the step's answer.")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["json", "text"] = Field("json", description="json: one object per line.")


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` as (host, port); ValueError otherwise. One parser for every listening address
    a door binds, checked here when the settings load."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class _OptionalAddressSection(_Section):
    """A section whose `address` is host:port, or empty for a door that is not served."""

    @field_validator("address", check_fields=False)
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        if address:
            try:
                split_host_port(address)
            except ValueError:
                raise ValueError("expected host:port (e.g. 127.0.0.1:8080), or empty to serve nothing there") from None
        return address


class HttpSettings(_OptionalAddressSection):
    """The OpenAI-compatible HTTP door (router/doors/http/): POST /v1/chat/completions, GET /v1/models."""

    address: str = Field(
        "", description="host:port where the daemon serves its OpenAI-compatible HTTP door; empty: not served "
        "(`hybrid-router serve --http 127.0.0.1:8080` sets it). It takes the gRPC port's principals as "
        "`Authorization: Bearer <token>`, its TLS (server.tls_*), and its binding rule: beyond loopback only "
        "with TLS and tokens.")


class MetricsSettings(_OptionalAddressSection):
    """Prometheus metrics of the daemon (router/assembly/metrics.py), served over HTTP at /metrics."""

    address: str = Field(
        "", description="host:port where the daemon serves Prometheus metrics at /metrics; empty: not served. "
        "Loopback (127.0.0.1:9464) is advised. With auth.mode = token, a scrape must carry a token whose role "
        "grants the metrics action.")


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    budget: BudgetSettings = BudgetSettings()
    breaker: BreakerSettings = BreakerSettings()
    privacy: PrivacySettings = PrivacySettings()
    models: ModelsSettings = ModelsSettings()
    edge: EdgeSettings = EdgeSettings()
    cloud: CloudSettings = CloudSettings()
    standin: StandinSettings = StandinSettings()
    ledger: LedgerSettings = LedgerSettings()
    arbitration: ArbitrationSettings = ArbitrationSettings()
    routing: RoutingSettings = RoutingSettings()
    auto: AutoSettings = AutoSettings()
    info: InfoSettings = InfoSettings()
    agent: AgentSettings = AgentSettings()
    logging: LoggingSettings = LoggingSettings()
    http: HttpSettings = HttpSettings()
    metrics: MetricsSettings = MetricsSettings()


SECTIONS = tuple(Settings.model_fields)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested dict from HYBRID_ROUTER_SECTION__KEY variables, and which variable set each key."""
    overrides: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        if len(path) != 2 or path[0] not in SECTIONS:
            raise ConfigError(f"environment variable {name}: expected HYBRID_ROUTER_<SECTION>__<KEY> "
                              f"with SECTION one of {', '.join(SECTIONS)}")
        overrides.setdefault(path[0], {})[path[1]] = value
        origin[path] = name
    return overrides, origin


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Optional[Path], environ: Mapping[str, str]) -> Settings:
    """Read the TOML file (if any), apply the environment, validate. Raises ConfigError."""
    file_data: dict[str, Any] = {}
    source = "defaults"
    if config_file is None and environ.get(CONFIG_FILE_ENV):
        config_file = Path(environ[CONFIG_FILE_ENV])
    if config_file is not None:
        source = str(config_file)
        try:
            file_data = tomllib.loads(Path(config_file).expanduser().read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    env_data, origin = _env_overrides(environ)
    try:
        return Settings.model_validate(_merge(file_data, env_data))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = tuple(str(part) for part in error["loc"])
            where = origin.get(key[:2], source)
            value = error.get("input")
            shown = "" if isinstance(value, dict) or "api_key" in key else f" (got {value!r})"
            problems.append(f"{'.'.join(key) or '<root>'}: {error['msg']}{shown} [from {where}]")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
