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
