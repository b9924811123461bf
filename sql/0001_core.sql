-- Core tables of tradestream: accounts, the records persisted from Kafka topics
-- (market data, signals, anomalies, orders, fills), the positions and portfolio snapshots that
-- triggers keep exact (see 0002_portfolio.sql), and the consumer offsets stored in the same
-- transaction as the rows a sink writes.
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
    -- Defaults to initial_capital on insert (trigger init_account below).
    cash                 NUMERIC NOT NULL,
    -- cash + Σ quantity × current_price, kept by the update_portfolio_value trigger.
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

CREATE FUNCTION init_account() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.cash := COALESCE(NEW.cash, NEW.initial_capital);
    NEW.total_value := COALESCE(NEW.total_value, NEW.cash);
    RETURN NEW;
END;
$$;

CREATE TRIGGER init_account BEFORE INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION init_account();

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
    -- Last mark (last fill price until mark_to_market sets one).
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

CREATE TABLE portfolio_snapshots (
    snapshot_id     BIGSERIAL NOT NULL,
    account_id      TEXT NOT NULL,
    -- Event time of the change (fill or mark), so backtests over old data get real dates.
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
    CONSTRAINT portfolio_snapshots_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (account_id)
);

CREATE INDEX portfolio_snapshots_account_id_snapshot_time_idx
    ON portfolio_snapshots (account_id, snapshot_time);
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
