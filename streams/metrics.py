"""Prometheus metrics of the stream agents (catalogue and tests: ``docs/observability.md``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS_CREATED = Counter("notifications_created_total", "Notifications accepted by ingest", ["priority"])
NOTIFICATIONS_REJECTED = Counter("notifications_rejected_total", "Requests rejected by validation", ["priority"])
DEAD_LETTERED = Counter("notifications_dead_lettered_total", "Records sent to the dead-letter topic", ["source_topic"])
NOTIFICATIONS_DELIVERED = Counter("notifications_delivered_total", "Successful deliveries", ["channel", "priority"])
NOTIFICATIONS_DEFERRED = Counter(
    "notifications_deferred_total", "Live deliveries deferred because the user was offline", ["channel"]
)
NOTIFICATIONS_FAILED = Counter("notifications_failed_total", "Failed delivery attempts", ["channel", "priority"])
DELIVERY_LATENCY = Histogram(
    "notification_delivery_latency_seconds",
    "Request time to hand-off to the channel",
    ["channel", "priority"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
NOTIFICATIONS_DUPLICATE = Counter(
    "notifications_deduplicated_total", "Requests dropped as duplicates (idempotency key or id seen)", ["priority"]
)
NOTIFICATIONS_RATE_LIMITED = Counter(
    "notifications_rate_limited_total", "Requests refused by the per-user rate limit", ["priority"]
)
NOTIFICATIONS_EXPIRED = Counter(
    "notifications_expired_total",
    "Notifications (or channel deliveries) dropped because expires_at passed",
    ["channel"],
)
DELIVERY_RETRIES = Counter(
    "notification_delivery_retries_total",
    "Delivery retries scheduled after a retriable failure",
    ["channel", "priority"],
)
DELIVERIES_ABANDONED = Counter(
    "notifications_abandoned_total",
    "Deliveries given up (attempts exhausted or permanent failure)",
    ["channel", "priority"],
)
DELIVERIES_CANCELLED = Counter(
    "notification_deliveries_cancelled_total", "Pending deliveries cancelled (read or deleted first)", ["channel"]
)
SCHEDULED_PENDING = Gauge("notification_scheduled_pending", "Delayed deliveries waiting in this worker's scheduler", [])
PRIORITY_WAITS = Counter(
    "ingest_priority_waits_total",
    "Times a lower-priority ingest agent yielded to queued higher-priority requests",
    ["priority"],
)

DUPLICATE_SENDS_SUPPRESSED = Counter(
    "notifications_duplicate_sends_suppressed_total",
    "Work records for a (notification, target) already delivered, not sent again",
    ["channel"],
)
SENT_TARGETS_EXPIRED = Counter(
    "notifications_sent_targets_expired_total",
    "Sent (notification, target) pairs forgotten after the retry horizon (streams.sent_targets)",
    ["channel"],
)
APNS_TOKENS_INVALIDATED = Counter(
    "apns_tokens_invalidated_total",
    "Device tokens APNs refused for good and Herald stopped targeting, by APNs reason (Unregistered, ...)",
    ["reason"],
)
