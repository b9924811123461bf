-- The tables of tradestream, as one schema: accounts, the records persisted from Kafka topics
-- (market data, features, signals, anomalies, orders and every order event, fills), the
-- positions that triggers keep exact and the portfolio snapshots the trading core's valuations
-- fill (functions and triggers: 0002_books.sql), each symbol's last mark, the consumer offsets
-- stored in the same transaction as the rows a sink writes, the schema registry and the REST
-- API's state.
--
-- This file and 0002_books.sql replace the migrations 0001-0070 of earlier commits; a
-- database made by those must be recreated (sqlx refuses it: its applied migrations changed).
--
-- Conventions other crates rely on:
--   * input amounts (prices, quantities, commissions, rates) are NUMERIC(28,8), the scale of the
--     Avro decimals; derived amounts (cash, P&L, values) are plain NUMERIC so nothing is ever
--     silently rounded;
--   * times are TIMESTAMPTZ; sides are 'BUY' | 'SELL' (signals also 'HOLD');
--   * constraints are named <table>_<column>_<rule> so the Rust connector can map a violation
--     to the field that broke it.

CREATE TABLE accounts (
    account_id           TEXT NOT NULL,
    name                 TEXT NOT NULL,
    -- Total return and snapshots are measured against this.
    initial_capital      NUMERIC(28,8) NOT NULL,
    -- Defaults to initial_capital on insert (trigger init_account, 0002_books.sql).
    cash                 NUMERIC NOT NULL,
    -- cash + Σ quantity × COALESCE(current_price, avg_price), kept by the
    -- update_portfolio_value triggers.
    total_value          NUMERIC NOT NULL,
    allow_short          BOOLEAN NOT NULL DEFAULT false,
    commission_per_share NUMERIC(28,8) NOT NULL DEFAULT 0,
    commission_bps       NUMERIC(28,8) NOT NULL DEFAULT 0,
    commission_min       NUMERIC(28,8) NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT accounts_pkey PRIMARY KEY (account_id),
    CONSTRAINT accounts_account_id_valid CHECK (account_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    CONSTRAINT accounts_initial_capital_positive CHECK (initial_capital > 0),
    CONSTRAINT accounts_commission_per_share_non_negative CHECK (commission_per_share >= 0),
    CONSTRAINT accounts_commission_bps_non_negative CHECK (commission_bps >= 0),
    CONSTRAINT accounts_commission_min_non_negative CHECK (commission_min >= 0)
);

-- One table for bars and ticks: a tick stores its price as open = high = low = close and its
-- size as volume, so readers need no union.
CREATE TABLE market_data (
    record_id   TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'BAR',
    symbol      TEXT NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    -- Bar interval ('1d', '1m', ...); NULL for ticks.
    interval    TEXT,
    open        NUMERIC(28,8) NOT NULL,
    high        NUMERIC(28,8) NOT NULL,
    low         NUMERIC(28,8) NOT NULL,
    close       NUMERIC(28,8) NOT NULL,
    volume      NUMERIC(28,8) NOT NULL,
    source      TEXT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT market_data_pkey PRIMARY KEY (record_id),
    CONSTRAINT market_data_kind_valid CHECK (kind IN ('BAR', 'TICK')),
    CONSTRAINT market_data_symbol_not_empty CHECK (symbol <> ''),
    CONSTRAINT market_data_open_positive CHECK (open > 0),
    CONSTRAINT market_data_high_positive CHECK (high > 0),
    CONSTRAINT market_data_low_positive CHECK (low > 0),
    CONSTRAINT market_data_close_positive CHECK (close > 0),
    CONSTRAINT market_data_volume_non_negative CHECK (volume >= 0),
    CONSTRAINT market_data_high_range CHECK (high >= low AND high >= open AND high >= close),
    CONSTRAINT market_data_low_range CHECK (low <= open AND low <= close),
    CONSTRAINT market_data_interval_valid CHECK (
        (kind = 'BAR' AND interval IS NOT NULL AND interval <> '')
        OR (kind = 'TICK' AND interval IS NULL)),
    CONSTRAINT market_data_kind_consistent CHECK (
        kind = 'BAR' OR (open = high AND high = low AND low = close))
);

CREATE INDEX market_data_symbol_event_time_idx ON market_data (symbol, event_time);

CREATE TABLE signals (
    signal_id       TEXT NOT NULL,
    -- The features record the signal was computed from.
    source_id       TEXT,
    symbol          TEXT NOT NULL,
    event_time      TIMESTAMPTZ NOT NULL,
    side            TEXT NOT NULL,
    -- A probability, not money: DOUBLE PRECISION like the Avro field.
    confidence      DOUBLE PRECISION NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    reference_price NUMERIC(28,8),
    stop_loss       NUMERIC(28,8),
    take_profit     NUMERIC(28,8),
    reason          TEXT NOT NULL DEFAULT '',
    ingested_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT signals_pkey PRIMARY KEY (signal_id),
    CONSTRAINT signals_side_valid CHECK (side IN ('BUY', 'SELL', 'HOLD')),
    CONSTRAINT signals_confidence_range CHECK (confidence >= 0 AND confidence <= 1),
    CONSTRAINT signals_reference_price_positive CHECK (reference_price > 0),
    CONSTRAINT signals_stop_loss_positive CHECK (stop_loss > 0),
    CONSTRAINT signals_take_profit_positive CHECK (take_profit > 0)
);

CREATE INDEX signals_symbol_event_time_idx ON signals (symbol, event_time);
CREATE INDEX signals_ingested_at_idx ON signals (ingested_at, signal_id);

CREATE TABLE anomalies (
    anomaly_id       TEXT NOT NULL,
    source_id        TEXT,
    symbol           TEXT NOT NULL,
    event_time       TIMESTAMPTZ NOT NULL,
    kind             TEXT NOT NULL,
    score            DOUBLE PRECISION NOT NULL,
    severity         TEXT NOT NULL,
    detector_version TEXT NOT NULL,
    ingested_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT anomalies_pkey PRIMARY KEY (anomaly_id),
    CONSTRAINT anomalies_score_finite CHECK (score <> 'NaN' AND score <> 'Infinity' AND score <> '-Infinity'),
    CONSTRAINT anomalies_severity_valid CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL'))
);

CREATE INDEX anomalies_symbol_event_time_idx ON anomalies (symbol, event_time);
CREATE INDEX anomalies_ingested_at_idx ON anomalies (ingested_at, anomaly_id);

-- Latest known state of each order. The orders topic carries one event per state change
-- (sequence 0, 1, ...); the row keeps the highest sequence seen.
CREATE TABLE orders (
    order_id        TEXT NOT NULL,
    client_order_id TEXT,
    account_id      TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    order_type      TEXT NOT NULL,
    quantity        NUMERIC(28,8) NOT NULL,
    limit_price     NUMERIC(28,8),
    stop_price      NUMERIC(28,8),
    time_in_force   TEXT NOT NULL DEFAULT 'DAY',
    status          TEXT NOT NULL DEFAULT 'NEW',
    filled_quantity NUMERIC(28,8) NOT NULL DEFAULT 0,
    -- What caused the order: 'SIGNAL', 'MANUAL' or 'BRACKET'.
    origin          TEXT NOT NULL,
    origin_id       TEXT,
    parent_order_id TEXT,
    sequence        INTEGER NOT NULL DEFAULT 0,
    reject_reason   TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT orders_pkey PRIMARY KEY (order_id),
    CONSTRAINT orders_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT orders_side_valid CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT orders_order_type_valid CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    CONSTRAINT orders_time_in_force_valid CHECK (time_in_force IN ('DAY', 'GTC', 'IOC')),
    CONSTRAINT orders_status_valid CHECK (status IN
        ('NEW', 'ACCEPTED', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')),
    CONSTRAINT orders_origin_valid CHECK (origin IN ('SIGNAL', 'MANUAL', 'BRACKET')),
    CONSTRAINT orders_sequence_non_negative CHECK (sequence >= 0),
    -- The validate_order trigger gives a clearer error on insert; these keep updates honest.
    -- A REJECTED order records a refused request and may carry the values that caused it.
    CONSTRAINT orders_quantity_positive CHECK (status = 'REJECTED' OR quantity > 0),
    CONSTRAINT orders_limit_price_required CHECK (
        status = 'REJECTED' OR order_type NOT IN ('LIMIT', 'STOP_LIMIT') OR limit_price IS NOT NULL),
    CONSTRAINT orders_stop_price_required CHECK (
        status = 'REJECTED' OR order_type NOT IN ('STOP', 'STOP_LIMIT') OR stop_price IS NOT NULL),
    CONSTRAINT orders_limit_price_positive CHECK (status = 'REJECTED' OR limit_price > 0),
    CONSTRAINT orders_stop_price_positive CHECK (status = 'REJECTED' OR stop_price > 0),
    CONSTRAINT orders_filled_quantity_range CHECK (
        status = 'REJECTED' OR (filled_quantity >= 0 AND filled_quantity <= quantity))
);

CREATE UNIQUE INDEX orders_account_id_client_order_id_key
    ON orders (account_id, client_order_id) WHERE client_order_id IS NOT NULL;
CREATE INDEX orders_account_id_created_at_idx ON orders (account_id, created_at);
CREATE INDEX orders_symbol_created_at_idx ON orders (symbol, created_at);

-- Executions. No foreign key to orders: fills and orders arrive on different topics and a
-- fill may be stored before its order's row.
CREATE TABLE fills (
    fill_id     TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    side        TEXT NOT NULL,
    quantity    NUMERIC(28,8) NOT NULL,
    price       NUMERIC(28,8) NOT NULL,
    commission  NUMERIC(28,8) NOT NULL DEFAULT 0,
    liquidity   TEXT NOT NULL DEFAULT 'TAKER',
    fill_time   TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT fills_pkey PRIMARY KEY (fill_id),
    CONSTRAINT fills_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT fills_symbol_not_empty CHECK (symbol <> ''),
    CONSTRAINT fills_side_valid CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT fills_quantity_positive CHECK (quantity > 0),
    CONSTRAINT fills_price_positive CHECK (price > 0),
    CONSTRAINT fills_commission_non_negative CHECK (commission >= 0),
    CONSTRAINT fills_liquidity_valid CHECK (liquidity IN ('MAKER', 'TAKER'))
);

CREATE INDEX fills_order_id_idx ON fills (order_id);
CREATE INDEX fills_account_id_fill_time_idx ON fills (account_id, fill_time);
CREATE INDEX fills_symbol_fill_time_idx ON fills (symbol, fill_time);
CREATE INDEX fills_fill_time_idx ON fills (fill_time);
-- The REST API's event stream (`GET /v1/stream`) reads new rows in insertion order.
CREATE INDEX fills_ingested_at_idx ON fills (ingested_at, fill_id);

-- Kept by the apply_fill trigger; quantity is signed (short is negative).
CREATE TABLE positions (
    account_id     TEXT NOT NULL,
    symbol         TEXT NOT NULL,
    quantity       NUMERIC NOT NULL DEFAULT 0,
    -- Rounded to 8 decimal places, half away from zero; 0 when flat.
    avg_price      NUMERIC NOT NULL DEFAULT 0,
    realized_pnl   NUMERIC NOT NULL DEFAULT 0,
    -- Commission paid on this symbol so far (already deducted from cash).
    commission     NUMERIC NOT NULL DEFAULT 0,
    -- Last mark. A new position starts at its opening fill's price, or at its symbol's last
    -- mark (symbol_marks) when that is at or after the fill; later fills leave it as it is.
    current_price  NUMERIC(28,8),
    unrealized_pnl NUMERIC NOT NULL DEFAULT 0,
    -- Event time of the last fill or mark.
    updated_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT positions_pkey PRIMARY KEY (account_id, symbol),
    CONSTRAINT positions_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT positions_avg_price_non_negative CHECK (avg_price >= 0),
    CONSTRAINT positions_current_price_positive CHECK (current_price > 0)
);

CREATE INDEX positions_symbol_idx ON positions (symbol);

-- Each account's value at the end of each market instant, as the trading core valued it
-- (topic `valuations`, stored by the sink through write_valuations): one row per account and
-- instant. No trigger writes here.
CREATE TABLE portfolio_snapshots (
    snapshot_id     BIGSERIAL NOT NULL,
    account_id      TEXT NOT NULL,
    -- Event time of the instant valued, so backtests over old data get real dates.
    snapshot_time   TIMESTAMPTZ NOT NULL,
    total_value     NUMERIC NOT NULL,
    cash            NUMERIC NOT NULL,
    positions_value NUMERIC NOT NULL,
    -- total_value - initial_capital.
    total_pnl       NUMERIC NOT NULL,
    -- total_pnl / initial_capital, rounded to 8 decimal places half away from zero.
    total_return    NUMERIC NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT portfolio_snapshots_pkey PRIMARY KEY (snapshot_id),
    CONSTRAINT portfolio_snapshots_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT portfolio_snapshots_account_time_key UNIQUE (account_id, snapshot_time)
);

-- (account_id, snapshot_time) lookups use the unique constraint's index.
CREATE INDEX portfolio_snapshots_snapshot_time_idx ON portfolio_snapshots (snapshot_time);

-- Next offset to consume per (group, topic, partition). A sink writes this row in the same
-- transaction as the rows it derived from those records, so a crash never loses or doubles one.
CREATE TABLE consumed_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    next_offset    BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT consumed_offsets_pkey PRIMARY KEY (consumer_group, topic, partition),
    CONSTRAINT consumed_offsets_partition_non_negative CHECK (partition >= 0),
    CONSTRAINT consumed_offsets_next_offset_non_negative CHECK (next_offset >= 0)
);

-- The last price mark_to_market_batch marked each symbol at, in the order it marked them
-- (whether or not anybody held the symbol then). apply_fill opens a new position at this mark
-- when it is at or after the fill's time.
CREATE TABLE symbol_marks (
    symbol TEXT NOT NULL,
    price  NUMERIC(28,8) NOT NULL,
    at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT symbol_marks_pkey PRIMARY KEY (symbol)
);

------------------------------------------------------------------------------------------------
-- Indicator values computed per market-data record (the `features` topic), stored by the sink.
-- Keyed by the deterministic record id, so a replayed record is ignored (ON CONFLICT DO
-- NOTHING). Indicator values are statistics, not money: one JSONB object name -> number, so
-- new indicators need no migration (the Avro field `values` is stored as `indicator_values`,
-- since VALUES is an SQL keyword); the close is money and stays NUMERIC(28,8).

CREATE TABLE features (
    record_id           TEXT NOT NULL,
    -- The market-data record these features were computed from.
    source_id           TEXT NOT NULL,
    symbol              TEXT NOT NULL,
    event_time          TIMESTAMPTZ NOT NULL,
    close               NUMERIC(28,8) NOT NULL,
    -- {"sma_20": 6700.5, "rsi_14": 41.25, ...}; indicators still warming up are absent.
    indicator_values    JSONB NOT NULL DEFAULT '{}'::jsonb,
    bar_class           TEXT NOT NULL,
    trend               TEXT NOT NULL,
    feature_set_version TEXT NOT NULL,
    ingested_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT features_pkey PRIMARY KEY (record_id),
    CONSTRAINT features_symbol_not_empty CHECK (symbol <> ''),
    CONSTRAINT features_close_positive CHECK (close > 0),
    CONSTRAINT features_indicator_values_valid CHECK (jsonb_typeof(indicator_values) = 'object'),
    CONSTRAINT features_bar_class_valid CHECK (bar_class IN ('REAL_BULL', 'REAL_BEAR', 'FAKE')),
    CONSTRAINT features_trend_valid CHECK (trend IN ('NEUTRAL', 'BULLISH', 'BEARISH'))
);

CREATE INDEX features_symbol_event_time_idx ON features (symbol, event_time);

------------------------------------------------------------------------------------------------
-- Every order event of the `orders` topic (one per state change), kept by the sink next to the
-- current state in `orders` (which already carries the highest `sequence` applied). Keyed by
-- the deterministic event id `<order_id>:<sequence>`, so a replayed event is ignored.
--
-- The checks mirror those of `orders`: an event that could never be a valid order state is
-- refused here too (mapped to a dead letter by the sink), even when a later event of the same
-- batch is the one that reaches `orders`.

CREATE TABLE order_events (
    event_id        TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    client_order_id TEXT,
    account_id      TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    order_type      TEXT NOT NULL,
    quantity        NUMERIC(28,8) NOT NULL,
    limit_price     NUMERIC(28,8),
    stop_price      NUMERIC(28,8),
    time_in_force   TEXT NOT NULL,
    status          TEXT NOT NULL,
    filled_quantity NUMERIC(28,8) NOT NULL,
    origin          TEXT NOT NULL,
    origin_id       TEXT,
    parent_order_id TEXT,
    reject_reason   TEXT,
    -- The order's creation time and the time of this state (event times, from the record).
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    ingested_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT order_events_pkey PRIMARY KEY (event_id),
    CONSTRAINT order_events_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id),
    CONSTRAINT order_events_sequence_non_negative CHECK (sequence >= 0),
    CONSTRAINT order_events_side_valid CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT order_events_order_type_valid CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    CONSTRAINT order_events_time_in_force_valid CHECK (time_in_force IN ('DAY', 'GTC', 'IOC')),
    CONSTRAINT order_events_status_valid CHECK (status IN
        ('NEW', 'ACCEPTED', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')),
    CONSTRAINT order_events_origin_valid CHECK (origin IN ('SIGNAL', 'MANUAL', 'BRACKET')),
    CONSTRAINT order_events_quantity_positive CHECK (status = 'REJECTED' OR quantity > 0),
    CONSTRAINT order_events_limit_price_required CHECK (
        status = 'REJECTED' OR order_type NOT IN ('LIMIT', 'STOP_LIMIT') OR limit_price IS NOT NULL),
    CONSTRAINT order_events_stop_price_required CHECK (
        status = 'REJECTED' OR order_type NOT IN ('STOP', 'STOP_LIMIT') OR stop_price IS NOT NULL),
    CONSTRAINT order_events_limit_price_positive CHECK (status = 'REJECTED' OR limit_price > 0),
    CONSTRAINT order_events_stop_price_positive CHECK (status = 'REJECTED' OR stop_price > 0),
    CONSTRAINT order_events_filled_quantity_range CHECK (
        status = 'REJECTED' OR (filled_quantity >= 0 AND filled_quantity <= quantity))
);

CREATE INDEX order_events_order_id_sequence_idx ON order_events (order_id, sequence);
CREATE INDEX order_events_account_id_updated_at_idx ON order_events (account_id, updated_at);
-- The REST API's event stream (`GET /v1/stream`) reads new rows in insertion order.
CREATE INDEX order_events_ingested_at_idx ON order_events (ingested_at, event_id);

------------------------------------------------------------------------------------------------
-- Confluent-compatible schema registry (schemas/src/registry).
--
-- Schema ids are global and permanent: one id per distinct schema, whichever subjects use it,
-- and a decoder holding an old record must always be able to fetch its schema, so rows in
-- schema_registry_schemas are never deleted (hard-deleting a subject removes only its versions).

CREATE TABLE schema_registry_schemas (
    -- Confluent clients put the id in a 4-byte signed field of every record.
    id          INTEGER GENERATED BY DEFAULT AS IDENTITY
                CONSTRAINT schema_registry_schemas_pkey PRIMARY KEY,
    schema_type TEXT NOT NULL DEFAULT 'AVRO'
                CONSTRAINT schema_registry_schemas_type_check CHECK (schema_type = 'AVRO'),
    -- SHA-256 of `canonical`; decides whether two submissions are the same schema.
    fingerprint BYTEA NOT NULL
                CONSTRAINT schema_registry_schemas_fingerprint_check CHECK (octet_length(fingerprint) = 32),
    -- The schema re-serialised from its parsed form: whitespace, key order and namespace
    -- spelling normalised away; defaults, logical types, docs and aliases kept (unlike Avro's
    -- Parsing Canonical Form, which would merge schemas that read data differently).
    canonical   TEXT NOT NULL,
    -- Avro's Parsing Canonical Form, for comparison with other tools.
    parsing_canonical_form TEXT NOT NULL,
    -- The text as first submitted; what GET /schemas/ids/{id} returns.
    schema_text TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT schema_registry_schemas_fingerprint_key UNIQUE (fingerprint)
);

-- One row per subject that has (or had) versions. Writers lock this row to serialise version
-- numbering and compatibility checks within a subject.
CREATE TABLE schema_registry_subjects (
    subject    TEXT CONSTRAINT schema_registry_subjects_pkey PRIMARY KEY
               CONSTRAINT schema_registry_subjects_subject_check CHECK (subject <> ''),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE schema_registry_subject_versions (
    subject    TEXT NOT NULL
               CONSTRAINT schema_registry_subject_versions_subject_fkey
               REFERENCES schema_registry_subjects (subject) ON DELETE CASCADE,
    version    INTEGER NOT NULL
               CONSTRAINT schema_registry_subject_versions_version_check CHECK (version > 0),
    schema_id  INTEGER NOT NULL
               CONSTRAINT schema_registry_subject_versions_schema_fkey
               REFERENCES schema_registry_schemas (id),
    -- Soft-deleted versions stay (and keep their number) until deleted permanently.
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT schema_registry_subject_versions_pkey PRIMARY KEY (subject, version)
);

-- A schema is live at most once per subject. Partial because Confluent lets a schema whose
-- version was soft-deleted be registered again as a new version with the same id.
CREATE UNIQUE INDEX schema_registry_subject_versions_live_schema_key
    ON schema_registry_subject_versions (subject, schema_id) WHERE NOT deleted;

CREATE INDEX schema_registry_subject_versions_schema_id_idx
    ON schema_registry_subject_versions (schema_id);

-- Compatibility levels: one row per subject with its own level, plus at most one global row
-- (subject IS NULL). No global row means the default, BACKWARD.
CREATE TABLE schema_registry_config (
    subject       TEXT
                  CONSTRAINT schema_registry_config_subject_check CHECK (subject <> ''),
    compatibility TEXT NOT NULL
                  CONSTRAINT schema_registry_config_compatibility_check CHECK (compatibility IN (
                      'NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE',
                      'FULL', 'FULL_TRANSITIVE')),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT schema_registry_config_subject_key UNIQUE (subject)
);

CREATE UNIQUE INDEX schema_registry_config_global_key
    ON schema_registry_config ((subject IS NULL)) WHERE subject IS NULL;

------------------------------------------------------------------------------------------------
-- State owned by the REST API (connectors/rest).
--
-- api_order_requests: every manual order the API accepted, written BEFORE it is published
-- (the record of intent, an outbox): the NEW order record exactly as it is published, when it
-- was published (NULL: not yet; the API's relay publishes it), and its `Idempotency-Key` with
-- the request's hash, so a retry returns the same order, a key reused for another request is
-- refused and two racing requests make one order. Keys and client order ids are unique per
-- account.
--
-- controls: the current state of each operator control (the kill switch), as the API last
-- recorded it, with who changed it and why; control_events keeps every change for audit and
-- is the outbox of the `controls` topic (published_at NULL: not published yet).

CREATE TABLE api_order_requests (
    order_id        TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    client_order_id TEXT,
    idempotency_key TEXT,
    -- Hex SHA-256 of method, path, account and body.
    request_hash    TEXT NOT NULL,
    -- The `Order` record (NEW) as published on `orders`, serde JSON.
    record          JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at    TIMESTAMPTZ,
    CONSTRAINT api_order_requests_pkey PRIMARY KEY (order_id),
    CONSTRAINT api_order_requests_idempotency_key_key UNIQUE (account_id, idempotency_key),
    CONSTRAINT api_order_requests_client_order_id_key UNIQUE (account_id, client_order_id),
    CONSTRAINT api_order_requests_idempotency_key_valid CHECK (length(idempotency_key) BETWEEN 1 AND 255)
);

CREATE INDEX api_order_requests_unpublished_idx ON api_order_requests (created_at)
    WHERE published_at IS NULL;

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
    published_at TIMESTAMPTZ,
    CONSTRAINT control_events_pkey PRIMARY KEY (control_id)
);

CREATE INDEX control_events_unpublished_idx ON control_events (issued_at)
    WHERE published_at IS NULL;

CREATE INDEX control_events_name_issued_at_idx ON control_events (name, issued_at);
