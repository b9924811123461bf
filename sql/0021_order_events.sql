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
