-- Marks in batches: mark_to_market_batch(symbols[], prices[], times[]) has exactly the effect of
-- calling mark_to_market for each element in array order, in a handful of set-based statements.
--
-- Why: the sink marks positions at every stored bar. One mark_to_market per bar updates the
-- same positions and accounts rows hundreds of times in one transaction; every update leaves a
-- row version that later lookups in the transaction walk past, so a batch costs O(bars²) and
-- marks took half of the sink's database time (docs/benchmarks.md). The batch form writes the
-- same per-bar portfolio snapshots (the series get_portfolio_stats needs) computed from running
-- sums, then updates each marked position and account once.
--
-- The update_portfolio_value trigger stands aside while the batch updates positions (the
-- transaction-local setting tradestream.marking_batch = 'on'): the batch has already written
-- the snapshots those updates would write.

-- The trigger's condition is evaluated as each row changes, so the batch's position updates
-- queue no trigger event at all.
DROP TRIGGER update_portfolio_value ON positions;
CREATE TRIGGER update_portfolio_value AFTER INSERT OR UPDATE OR DELETE ON positions
    FOR EACH ROW
    WHEN (current_setting('tradestream.marking_batch', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION update_portfolio_value();

CREATE FUNCTION mark_to_market_batch(p_symbols TEXT[], p_prices NUMERIC[], p_times TIMESTAMPTZ[])
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

    -- One snapshot per (mark, position of its symbol), in mark order. An account's positions
    -- value after mark k is its value before the batch plus, over its marks up to k, quantity
    -- times the change of the stored (8-decimal) price: NUMERIC sums are exact, so this equals
    -- the sum update_portfolio_value would take after each mark.
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
               sum(m.change) OVER (PARTITION BY m.account_id ORDER BY m.ord) AS delta
          FROM marks m
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
    )
    INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                     positions_value, total_pnl, total_return)
    SELECT v.account_id, v.at, v.total_value, v.cash, v.pos_value,
           v.total_value - v.initial_capital,
           ts_div_round(v.total_value - v.initial_capital, v.initial_capital, 8)
      FROM valued v
     ORDER BY v.ord, v.account_id;
    GET DIAGNOSTICS n = ROW_COUNT;
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
    'Marks positions at each (symbol, price, time) of the arrays in order, with exactly the effect of one mark_to_market per element: the same portfolio snapshots (one per mark and position, in order), and each position and account left at its last mark. Returns the number of position marks; TS003 for a non-positive price or a NULL time of a symbol with positions, or arrays of different lengths.';
