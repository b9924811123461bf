-- Portfolio snapshots per instant, not per bar: mark_to_market_batch now writes one snapshot
-- per account for each run of its marks that share an event time, the value after the last of
-- them, where it wrote one after every mark.
--
-- Why: ingest sends every bar of an instant together, so a batch of 60 symbols' bars wrote up
-- to 60 snapshots per account at the same time, all but the last valuing the portfolio with
-- some symbols at the new instant's price and others still at the previous one: states the
-- portfolio never was in. They were four in five of the snapshot rows and one of the largest
-- costs of the sink's database time (docs/benchmarks.md). get_portfolio_stats reads each day's
-- last snapshot, which is unchanged. Positions, accounts and the returned count (every
-- (mark, position) pair) are exactly as before.

CREATE OR REPLACE FUNCTION mark_to_market_batch(p_symbols TEXT[], p_prices NUMERIC[], p_times TIMESTAMPTZ[])
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n   BIGINT;
    bad RECORD;
BEGIN
    IF cardinality(p_symbols) IS DISTINCT FROM cardinality(p_prices)
       OR cardinality(p_symbols) IS DISTINCT FROM cardinality(p_times) THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003',
            MESSAGE = format('mark_to_market_batch: %s symbols, %s prices and %s times',
                             cardinality(p_symbols), cardinality(p_prices), cardinality(p_times));
    END IF;

    -- The first mark mark_to_market would refuse (only symbols with positions are marked).
    SELECT u.price, u.at INTO bad
      FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
     WHERE (u.price IS NULL OR u.price <= 0 OR u.at IS NULL)
       AND EXISTS (SELECT 1 FROM positions p WHERE p.symbol = u.symbol)
     ORDER BY u.ord
     LIMIT 1;
    IF FOUND THEN
        IF bad.price IS NULL OR bad.price <= 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_price',
                MESSAGE = format('mark_to_market: price must be > 0, got %s',
                                 COALESCE(bad.price::text, 'NULL'));
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_time',
            MESSAGE = 'mark_to_market: time must not be NULL';
    END IF;

    -- One snapshot per account and instant: after the last of a run of the account's marks
    -- that share an event time (ingest sends every bar of an instant together). An account's
    -- positions value after mark k is its value before the batch plus, over its marks up to
    -- k, quantity times the change of the stored (8-decimal) price: NUMERIC sums are exact,
    -- so this equals the sum update_portfolio_value would take after each mark. n counts
    -- every (mark, position) pair, as one mark_to_market per mark would.
    WITH marks AS (
        SELECT p.account_id, u.ord, u.at,
               p.quantity * (u.price::NUMERIC(28,8)
                             - COALESCE(lag(u.price::NUMERIC(28,8)) OVER w,
                                        p.current_price, p.avg_price)) AS change
          FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
          JOIN positions p ON p.symbol = u.symbol
        WINDOW w AS (PARTITION BY p.account_id, p.symbol ORDER BY u.ord)
    ),
    running AS (
        SELECT m.account_id, m.ord, m.at,
               sum(m.change) OVER a AS delta,
               lead(m.at) OVER a AS next_at
          FROM marks m
        WINDOW a AS (PARTITION BY m.account_id ORDER BY m.ord)
    ),
    before AS (
        SELECT p.account_id, sum(p.quantity * COALESCE(p.current_price, p.avg_price)) AS value
          FROM positions p
         WHERE p.account_id IN (SELECT m.account_id FROM marks m)
         GROUP BY p.account_id
    ),
    valued AS (
        SELECT r.account_id, r.ord, r.at, a.cash, a.initial_capital,
               b.value + r.delta AS pos_value,
               a.cash + (b.value + r.delta) AS total_value
          FROM running r
          JOIN before b ON b.account_id = r.account_id
          JOIN accounts a ON a.account_id = r.account_id
         WHERE r.next_at IS DISTINCT FROM r.at
    ),
    written AS (
        INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                         positions_value, total_pnl, total_return)
        SELECT v.account_id, v.at, v.total_value, v.cash, v.pos_value,
               v.total_value - v.initial_capital,
               ts_div_round(v.total_value - v.initial_capital, v.initial_capital, 8)
          FROM valued v
         ORDER BY v.ord, v.account_id
    )
    SELECT count(*) INTO n FROM marks;
    IF n = 0 THEN
        RETURN 0;
    END IF;

    -- Each marked position once, at its symbol's last mark of the batch.
    PERFORM set_config('tradestream.marking_batch', 'on', true);
    UPDATE positions p
       SET current_price  = l.price,
           unrealized_pnl = p.quantity * (l.price - p.avg_price),
           updated_at     = l.at
      FROM (SELECT DISTINCT ON (u.symbol) u.symbol, u.price, u.at
              FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
             ORDER BY u.symbol, u.ord DESC) l
     WHERE p.symbol = l.symbol;
    PERFORM set_config('tradestream.marking_batch', 'off', true);

    UPDATE accounts a
       SET total_value = a.cash + v.value, updated_at = now()
      FROM (SELECT p.account_id, sum(p.quantity * COALESCE(p.current_price, p.avg_price)) AS value
              FROM positions p
             WHERE p.account_id IN (SELECT m.account_id FROM positions m
                                     WHERE m.symbol = ANY (p_symbols))
             GROUP BY p.account_id) v
     WHERE a.account_id = v.account_id;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION mark_to_market_batch(TEXT[], NUMERIC[], TIMESTAMPTZ[]) IS
    'Marks positions at each (symbol, price, time) of the arrays in order: each position and account is left at its last mark, exactly as one mark_to_market per element would leave them, and each account gets one portfolio snapshot per run of its consecutive marks with the same time (the value after the last of the run; one mark_to_market per element would write one per mark). Returns the number of (mark, position) pairs; TS003 for a non-positive price or a NULL time of a symbol with positions, or arrays of different lengths.';
