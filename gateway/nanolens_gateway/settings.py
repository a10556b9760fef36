"""The gateway's settings (``NANOLENS_*`` variables; ``nanolens settings`` lists them)."""

from __future__ import annotations

from dataclasses import dataclass

from nanolens_runtime.settings import setting


@dataclass(frozen=True)
class GatewaySettings:
    # each domain service's address is NANOLENS_<DOMAIN>_ADDR (nanolens_gateway.domains)
    max_image_mp: int = setting(
        "NANOLENS_MAX_IMAGE_MP", 16,
        "largest micrograph accepted, megapixels (it travels as one message: keep it under NANOLENS_MAX_MESSAGE_MB)")
    raw_bucket: str = setting("NANOLENS_RAW_BUCKET", "raw", "bucket for uploads and raw data")
    results_bucket: str = setting("NANOLENS_RESULTS_BUCKET", "results", "bucket for results and artefacts")
    sem_index_above: int = setting("NANOLENS_SEM_INDEX_ABOVE", 20000,
                                   "SEM collections of this many images or more are searched through an HNSW graph "
                                   "(stored beside them); smaller ones exactly")
    sem_relist_seconds: float = setting("NANOLENS_SEM_RELIST_SECONDS", 60.0,
                                        "a search lists an SEM collection's items when an analysis added one since, "
                                        "and at least this often (items deleted from storage directly leave the "
                                        "hits within it)")
    max_object_mb: int = setting("NANOLENS_MAX_OBJECT_MB", 2048, "largest input object accepted, MiB")
    max_upload_mb: int = setting("NANOLENS_MAX_UPLOAD_MB", 2048, "largest streamed upload, MiB")
    max_inline_kb: int = setting("NANOLENS_MAX_INLINE_KB", 1024,
                                 "largest item carried inline in AnalyzeMany, KiB (larger ones are uploaded and "
                                 "named; keep it under NANOLENS_MAX_MESSAGE_MB)")
    many_concurrency: int = setting("NANOLENS_MANY_CONCURRENCY", 64,
                                    "items of one AnalyzeMany call analysed at once (the domain services batch "
                                    "them)")
    block_mb: int = setting("NANOLENS_BLOCK_MB", 8, "size of the blocks maps travel to services in, MiB")
    by_reference_mb: int = setting("NANOLENS_BY_REFERENCE_MB", 8,
                                   "inputs at least this large that their service can read itself (spectral maps "
                                   "in .npy) are read by it from object storage, by a short-lived presigned URL the "
                                   "gateway signs after its access check, instead of through the gateway, MiB; 0: "
                                   "never (the service needs the same NANOLENS_S3_ENDPOINT)")
    tokens: str = setting("NANOLENS_GATEWAY_TOKENS", "",
                          "JSON list of the tokens callers may send, by SHA-256, with their actions, scopes and "
                          "expiry (from a Secret; `nanolens token create` makes entries); empty: no authentication",
                          secret=True)
    input_buckets: str = setting("NANOLENS_INPUT_BUCKETS", "",
                                 "comma-separated buckets besides NANOLENS_RAW_BUCKET whose objects may be analysed")
    jobs_db: str = setting("NANOLENS_JOBS_DB", "",
                           "the durable jobs' database: a SQLite file (WAL; one gateway replica) or a "
                           "postgresql:// URL (replicas share the work); empty: the job RPCs are off")
    job_concurrency: int = setting("NANOLENS_JOB_CONCURRENCY", 2,
                                   "job items analysed at once per domain service, per gateway")
    job_max_items: int = setting("NANOLENS_JOB_MAX_ITEMS", 100000, "most objects in one job")
    job_lease_seconds: float = setting("NANOLENS_JOB_LEASE_SECONDS", 30.0,
                                       "how long an item stays with a gateway that stopped renewing it (died)")
    job_outage_seconds: float = setting("NANOLENS_JOB_OUTAGE_SECONDS", 3600.0,
                                        "how long an item waits out a domain service or storage that is away "
                                        "(UNAVAILABLE, or a service silent past NANOLENS_JOB_ITEM_SECONDS, health "
                                        "checks too) before it fails; the wait spends no attempt")
    job_item_seconds: float = setting("NANOLENS_JOB_ITEM_SECONDS", 600.0,
                                      "longest an item's analysis may run; past it the item waits as an outage if its "
                                      "domain service no longer answers its health check, else it spends an attempt "
                                      "(raise it for inputs that take longer)")
    job_backoff_max_seconds: float = setting("NANOLENS_JOB_BACKOFF_MAX_SECONDS", 60.0,
                                             "longest pause between two tries of an item")
    job_max_crashes: int = setting("NANOLENS_JOB_MAX_CRASHES", 3,
                                   "an item whose gateway died this many times while running it fails as poison")
    job_report_seconds: float = setting("NANOLENS_JOB_REPORT_SECONDS", 10.0,
                                        "how often ended jobs get their report (report.html, index.csv, "
                                        "index.parquet under results/jobs/<job id>/) written; 0: never")
    events_port: int = setting("NANOLENS_EVENTS_PORT", 0,
                               "HTTP port of the bucket-event webhook (POST /events/minio; needs NANOLENS_JOBS_DB); "
                               "0: off")
    event_rules: str = setting("NANOLENS_EVENT_RULES", "",
                               "JSON file of the bucket-event rules: bucket, prefix, suffix -> analysis and options")
    events_token: str = setting("NANOLENS_EVENTS_TOKEN", "",
                                "token the webhook's caller sends (Authorization: Bearer ...); empty: none asked",
                                secret=True)
    events_scan_seconds: float = setting("NANOLENS_EVENTS_SCAN_SECONDS", 600.0,
                                         "reconciliation scan of the rule prefixes every this many seconds; 0: off")
    upload_url_seconds: int = setting("NANOLENS_UPLOAD_URL_MAX_SECONDS", 3600,
                                      "longest lifetime of a presigned upload URL, seconds")
    max_listed: int = setting("NANOLENS_MAX_LISTED", 1000,
                                      "spectra or particles listed one by one in a result")
