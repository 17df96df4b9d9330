"""The WebSocket gateway: connections (``connection``), the hub (``gateway``), presence in Redis
(``presence``), delivery receipts (``receipts``) and missed-notification replay (``replay``)."""
