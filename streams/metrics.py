"""Prometheus metrics of the stream agents."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

NOTIFICATIONS_CREATED = Counter(
    "notifications_created_total", "Notifications accepted by ingest", ["priority"]
)
NOTIFICATIONS_REJECTED = Counter(
    "notifications_rejected_total", "Requests rejected by validation", ["priority"]
)
DEAD_LETTERED = Counter(
    "notifications_dead_lettered_total", "Records sent to the dead-letter topic", ["source_topic"]
)
NOTIFICATIONS_DELIVERED = Counter(
    "notifications_delivered_total", "Successful deliveries", ["channel", "priority"]
)
NOTIFICATIONS_DEFERRED = Counter(
    "notifications_deferred_total", "Live deliveries deferred because the user was offline", ["channel"]
)
NOTIFICATIONS_FAILED = Counter(
    "notifications_failed_total", "Failed delivery attempts", ["channel", "priority"]
)
DELIVERY_LATENCY = Histogram(
    "notification_delivery_latency_seconds",
    "Request time to hand-off to the channel",
    ["channel", "priority"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
