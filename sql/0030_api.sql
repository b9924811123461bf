-- State owned by the REST API (connectors/rest).
--
-- api_idempotency: an `Idempotency-Key` → the first response to it, so a retried request
-- returns that response and never makes a second order. Scoped per principal (`sub`), and the
-- request's hash is kept so reusing a key for a different request is refused.
--
-- controls: the current state of each operator control (the kill switch), as the API last
-- published it to the `controls` topic, with who changed it and why; control_events keeps
-- every change for audit.

CREATE TABLE api_idempotency (
    principal       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- Hex SHA-256 of method, path and body.
    request_hash    TEXT NOT NULL,
    status_code     INTEGER NOT NULL,
    response_body   JSONB NOT NULL,
    location        TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT api_idempotency_pkey PRIMARY KEY (principal, idempotency_key),
    CONSTRAINT api_idempotency_idempotency_key_valid CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT api_idempotency_status_code_valid CHECK (status_code BETWEEN 100 AND 599)
);

CREATE INDEX api_idempotency_created_at_idx ON api_idempotency (created_at);

CREATE TABLE controls (
    name        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    control_id  TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT controls_pkey PRIMARY KEY (name),
    CONSTRAINT controls_name_valid CHECK (name IN ('KILL_SWITCH'))
);

CREATE TABLE control_events (
    control_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT control_events_pkey PRIMARY KEY (control_id)
);

CREATE INDEX control_events_name_issued_at_idx ON control_events (name, issued_at);

-- The event stream (`GET /v1/stream`) reads new rows in insertion order.
CREATE INDEX order_events_ingested_at_idx ON order_events (ingested_at, event_id);
CREATE INDEX fills_ingested_at_idx ON fills (ingested_at, fill_id);
CREATE INDEX signals_ingested_at_idx ON signals (ingested_at, signal_id);
CREATE INDEX anomalies_ingested_at_idx ON anomalies (ingested_at, anomaly_id);
