-- Portfolio logic kept inside the database, so every writer (sink, REST API, backtester, a
-- person at psql) gets the same exact accounting:
--   * validate_order   BEFORE INSERT ON orders: refuses malformed orders with SQLSTATE TS001
--                      and orders for unknown accounts with TS002;
--   * apply_fill       AFTER INSERT ON fills: moves cash, then the position (avg price,
--                      realized and unrealized P&L, commission);
--   * update_portfolio_value AFTER INSERT/UPDATE/DELETE ON positions: account total value and a
--                      portfolio snapshot at the event time;
--   * functions check_available_funds, require_available_funds, mark_to_market,
--     calculate_position_pnl, get_portfolio_stats.
--
-- Custom SQLSTATEs (class TS, mapped to Rust errors by tradestream-postgres):
--   TS001 invalid order    COLUMN names the field, TABLE = 'orders'
--   TS002 unknown account  DETAIL is the account id
--   TS003 invalid argument to a function (COLUMN names the parameter)
--   TS004 insufficient funds  DETAIL is the account id

-- round(p_num / p_den, p_scale) half away from zero, computed exactly: numeric division rounds
-- its quotient to ~16 significant digits first, and that double rounding can move a value that
-- sits just below a midpoint onto it.
CREATE FUNCTION ts_div_round(p_num NUMERIC, p_den NUMERIC, p_scale INTEGER) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT round(
        sign(p_num) * sign(p_den)
        * div(2 * abs(p_num) * power(10::numeric, p_scale) + abs(p_den), 2 * abs(p_den))
        * power(10::numeric, -p_scale),
        p_scale)
$$;

COMMENT ON FUNCTION ts_div_round(NUMERIC, NUMERIC, INTEGER) IS
    'Exact p_num / p_den rounded to p_scale decimal places, half away from zero (no intermediate rounding). Division by zero raises 22012.';

------------------------------------------------------------------------------------------------
-- Orders

CREATE FUNCTION validate_order() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM accounts WHERE account_id = NEW.account_id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS002',
            MESSAGE = format('unknown account %L for order %L', NEW.account_id, NEW.order_id),
            DETAIL = NEW.account_id,
            TABLE = 'orders',
            COLUMN = 'account_id';
    END IF;

    -- A rejection is a record of a refused request: keep the values that caused it.
    IF NEW.status = 'REJECTED' THEN
        RETURN NEW;
    END IF;

    IF NEW.quantity IS NULL OR NEW.quantity <= 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS001',
            MESSAGE = format('invalid order %L: quantity must be > 0, got %s',
                             NEW.order_id, COALESCE(NEW.quantity::text, 'NULL')),
            TABLE = 'orders', COLUMN = 'quantity';
    END IF;
    IF NEW.order_type IN ('LIMIT', 'STOP_LIMIT') AND NEW.limit_price IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS001',
            MESSAGE = format('invalid order %L: limit_price is required for %s orders',
                             NEW.order_id, NEW.order_type),
            TABLE = 'orders', COLUMN = 'limit_price';
    END IF;
    IF NEW.limit_price IS NOT NULL AND NEW.limit_price <= 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS001',
            MESSAGE = format('invalid order %L: limit_price must be > 0, got %s',
                             NEW.order_id, NEW.limit_price),
            TABLE = 'orders', COLUMN = 'limit_price';
    END IF;
    IF NEW.order_type IN ('STOP', 'STOP_LIMIT') AND NEW.stop_price IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS001',
            MESSAGE = format('invalid order %L: stop_price is required for %s orders',
                             NEW.order_id, NEW.order_type),
            TABLE = 'orders', COLUMN = 'stop_price';
    END IF;
    IF NEW.stop_price IS NOT NULL AND NEW.stop_price <= 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'TS001',
            MESSAGE = format('invalid order %L: stop_price must be > 0, got %s',
                             NEW.order_id, NEW.stop_price),
            TABLE = 'orders', COLUMN = 'stop_price';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_order BEFORE INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION validate_order();

------------------------------------------------------------------------------------------------
-- Funds

CREATE FUNCTION check_available_funds(
    p_account TEXT, p_symbol TEXT, p_side TEXT, p_quantity NUMERIC, p_price NUMERIC)
RETURNS BOOLEAN
LANGUAGE plpgsql STABLE AS $$
DECLARE
    acct accounts%ROWTYPE;
    held NUMERIC;
    commission NUMERIC;
BEGIN
    IF p_quantity IS NULL OR p_quantity <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_quantity',
            MESSAGE = format('check_available_funds: quantity must be > 0, got %s',
                             COALESCE(p_quantity::text, 'NULL'));
    END IF;
    IF p_side IS NULL OR p_side NOT IN ('BUY', 'SELL') THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_side',
            MESSAGE = format('check_available_funds: side must be BUY or SELL, got %L', p_side);
    END IF;

    SELECT * INTO acct FROM accounts WHERE account_id = p_account;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TS002', DETAIL = COALESCE(p_account, ''),
            MESSAGE = format('unknown account %L', p_account);
    END IF;

    IF p_side = 'BUY' THEN
        IF p_price IS NULL OR p_price <= 0 THEN
            RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_price',
                MESSAGE = format('check_available_funds: a BUY needs a price > 0, got %s',
                                 COALESCE(p_price::text, 'NULL'));
        END IF;
        -- Multiply by 0.0001 rather than divide by 10000: numeric division would round.
        commission := greatest(acct.commission_min,
            p_quantity * acct.commission_per_share
            + p_quantity * p_price * acct.commission_bps * 0.0001);
        RETURN acct.cash >= p_quantity * p_price + commission;
    END IF;

    IF acct.allow_short THEN
        RETURN TRUE;
    END IF;
    SELECT quantity INTO held FROM positions
        WHERE account_id = p_account AND symbol = p_symbol;
    RETURN COALESCE(held, 0) >= p_quantity;
END;
$$;

COMMENT ON FUNCTION check_available_funds(TEXT, TEXT, TEXT, NUMERIC, NUMERIC) IS
    'Whether the account can afford an order. BUY: cash >= quantity*price + greatest(commission_min, quantity*commission_per_share + quantity*price*commission_bps/10000). SELL: held quantity >= quantity unless the account allow_short (p_price may be NULL). Raises TS002 for an unknown account, TS003 for a bad side, quantity or BUY price.';

CREATE FUNCTION require_available_funds(
    p_account TEXT, p_symbol TEXT, p_side TEXT, p_quantity NUMERIC, p_price NUMERIC)
RETURNS VOID
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT check_available_funds(p_account, p_symbol, p_side, p_quantity, p_price) THEN
        RAISE EXCEPTION USING ERRCODE = 'TS004', DETAIL = p_account,
            MESSAGE = CASE p_side
                WHEN 'BUY' THEN format('insufficient funds: account %L cannot pay for %s %s at %s',
                                       p_account, p_quantity, p_symbol, p_price)
                ELSE format('insufficient position: account %L holds less than %s %s and may not sell short',
                            p_account, p_quantity, p_symbol)
            END;
    END IF;
END;
$$;

COMMENT ON FUNCTION require_available_funds(TEXT, TEXT, TEXT, NUMERIC, NUMERIC) IS
    'Like check_available_funds, but raises TS004 (insufficient funds, DETAIL = account id) instead of returning false.';

------------------------------------------------------------------------------------------------
-- Fills → cash and positions

CREATE FUNCTION apply_fill() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    q      NUMERIC := CASE NEW.side WHEN 'BUY' THEN NEW.quantity ELSE -NEW.quantity END;
    p      NUMERIC := NEW.price;
    pos    positions%ROWTYPE;
    new_q  NUMERIC;
    new_a  NUMERIC;
    closed NUMERIC;
    mark   NUMERIC;
BEGIN
    -- Cash first: the positions trigger (update_portfolio_value) reads it for the snapshot.
    -- Updating the account row also locks it, which serialises fills of one account.
    UPDATE accounts
       SET cash = cash - (q * p + NEW.commission), updated_at = now()
     WHERE account_id = NEW.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TS002', DETAIL = NEW.account_id,
            MESSAGE = format('unknown account %L for fill %L', NEW.account_id, NEW.fill_id);
    END IF;

    SELECT * INTO pos FROM positions
     WHERE account_id = NEW.account_id AND symbol = NEW.symbol
       FOR UPDATE;

    IF NOT FOUND THEN
        INSERT INTO positions (account_id, symbol, quantity, avg_price, realized_pnl, commission,
                               current_price, unrealized_pnl, updated_at)
        VALUES (NEW.account_id, NEW.symbol, q, round(p, 8), 0, NEW.commission,
                p, 0, NEW.fill_time);
        RETURN NULL;
    END IF;

    IF pos.quantity = 0 OR sign(pos.quantity) = sign(q) THEN
        -- Opening or adding: volume-weighted average price.
        new_a := ts_div_round(abs(pos.quantity) * pos.avg_price + abs(q) * p,
                              abs(pos.quantity) + abs(q), 8);
        new_q := pos.quantity + q;
    ELSE
        -- Reducing, closing or flipping.
        closed := least(abs(q), abs(pos.quantity));
        pos.realized_pnl := pos.realized_pnl + closed * (p - pos.avg_price) * sign(pos.quantity);
        new_q := pos.quantity + q;
        IF new_q = 0 THEN
            new_a := 0;
        ELSIF sign(new_q) <> sign(pos.quantity) THEN
            new_a := round(p, 8);  -- the remainder was opened at p
        ELSE
            new_a := pos.avg_price;
        END IF;
    END IF;

    mark := COALESCE(pos.current_price, p);

    UPDATE positions
       SET quantity       = new_q,
           avg_price      = new_a,
           realized_pnl   = pos.realized_pnl,
           commission     = pos.commission + NEW.commission,
           current_price  = mark,
           unrealized_pnl = new_q * (mark - new_a),
           updated_at     = NEW.fill_time
     WHERE account_id = NEW.account_id AND symbol = NEW.symbol;
    RETURN NULL;
END;
$$;

CREATE TRIGGER apply_fill AFTER INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION apply_fill();

COMMENT ON FUNCTION apply_fill() IS
    'AFTER INSERT ON fills: cash -= q*p + commission (q signed: + BUY, - SELL), then the position: adding moves avg_price to round((|Q|*A + |q|*p)/(|Q|+|q|), 8); reducing realizes min(|q|,|Q|)*(p - A)*sign(Q), a flat position has avg 0 and a flip re-opens at p; current_price is the fill price on the first fill and the last mark afterwards; unrealized_pnl = Q*(current_price - avg_price).';

------------------------------------------------------------------------------------------------
-- Marks

CREATE FUNCTION mark_to_market(p_symbol TEXT, p_price NUMERIC, p_time TIMESTAMPTZ)
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    IF p_price IS NULL OR p_price <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_price',
            MESSAGE = format('mark_to_market: price must be > 0, got %s', COALESCE(p_price::text, 'NULL'));
    END IF;
    IF p_time IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = 'p_time',
            MESSAGE = 'mark_to_market: time must not be NULL';
    END IF;
    UPDATE positions
       SET current_price  = p_price,
           unrealized_pnl = quantity * (p_price - avg_price),
           updated_at     = p_time
     WHERE symbol = p_symbol;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION mark_to_market(TEXT, NUMERIC, TIMESTAMPTZ) IS
    'Marks every position in p_symbol at p_price as of p_time (event time): current_price, unrealized_pnl = quantity*(p_price - avg_price), updated_at. Each updated position writes a portfolio snapshot. Returns the number of positions updated; TS003 for a non-positive price.';

CREATE FUNCTION calculate_position_pnl(p_symbol TEXT)
RETURNS TABLE(account_id TEXT, symbol TEXT, quantity NUMERIC, avg_price NUMERIC,
              current_price NUMERIC, unrealized_pnl NUMERIC)
LANGUAGE sql STABLE AS $$
    SELECT p.account_id, p.symbol, p.quantity, p.avg_price, p.current_price::numeric,
           p.quantity * (p.current_price - p.avg_price)
      FROM positions p
     WHERE p.symbol = p_symbol
     ORDER BY p.account_id
$$;

COMMENT ON FUNCTION calculate_position_pnl(TEXT) IS
    'Unrealized P&L of every position in p_symbol at its current mark: quantity*(current_price - avg_price), ordered by account.';

------------------------------------------------------------------------------------------------
-- Portfolio value and snapshots

CREATE FUNCTION update_portfolio_value() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    acct_id   TEXT;
    at        TIMESTAMPTZ;
    pos_value NUMERIC;
    acct      accounts%ROWTYPE;
    pnl       NUMERIC;
BEGIN
    IF TG_OP = 'DELETE' THEN
        acct_id := OLD.account_id;
        at := now();
    ELSE
        acct_id := NEW.account_id;
        at := NEW.updated_at;
    END IF;

    -- A position never marked is worth what it cost.
    SELECT COALESCE(sum(quantity * COALESCE(current_price, avg_price)), 0)
      INTO pos_value
      FROM positions WHERE account_id = acct_id;

    UPDATE accounts SET total_value = cash + pos_value, updated_at = now()
     WHERE account_id = acct_id
    RETURNING * INTO acct;
    IF NOT FOUND THEN
        RETURN NULL;  -- the account itself is being deleted
    END IF;

    pnl := acct.total_value - acct.initial_capital;
    INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                     positions_value, total_pnl, total_return)
    VALUES (acct_id, at, acct.total_value, acct.cash, pos_value, pnl,
            ts_div_round(pnl, acct.initial_capital, 8));
    RETURN NULL;
END;
$$;

CREATE TRIGGER update_portfolio_value AFTER INSERT OR UPDATE OR DELETE ON positions
    FOR EACH ROW EXECUTE FUNCTION update_portfolio_value();

COMMENT ON FUNCTION update_portfolio_value() IS
    'AFTER INSERT/UPDATE/DELETE ON positions: accounts.total_value = cash + sum(quantity*current_price) over the account''s positions, and a portfolio_snapshots row (total_value, cash, positions_value, total_pnl = total_value - initial_capital, total_return = round(total_pnl/initial_capital, 8)) at the position''s updated_at.';

CREATE FUNCTION get_portfolio_stats(p_start TIMESTAMPTZ, p_end TIMESTAMPTZ, p_account TEXT DEFAULT NULL)
RETURNS TABLE(total_return NUMERIC, sharpe DOUBLE PRECISION, max_drawdown NUMERIC,
              volatility DOUBLE PRECISION, snapshots BIGINT, start_value NUMERIC, end_value NUMERIC)
LANGUAGE sql STABLE AS $$
    WITH window_snaps AS (
        SELECT s.account_id, s.snapshot_time
          FROM portfolio_snapshots s
         WHERE s.snapshot_time >= p_start AND s.snapshot_time <= p_end
           AND (p_account IS NULL OR s.account_id = p_account)
    ),
    accts AS (
        SELECT DISTINCT w.account_id FROM window_snaps w
    ),
    days AS (
        SELECT DISTINCT (w.snapshot_time AT TIME ZONE 'UTC')::date AS day FROM window_snaps w
    ),
    -- Each account's value at the end of each day: its last snapshot up to then (carried
    -- forward over days it did not trade), or its initial capital before its first snapshot.
    daily AS (
        SELECT d.day,
               sum(COALESCE(
                   (SELECT s.total_value
                      FROM portfolio_snapshots s
                     WHERE s.account_id = a.account_id
                       AND s.snapshot_time < ((d.day + 1)::timestamp AT TIME ZONE 'UTC')
                       AND s.snapshot_time <= p_end
                     ORDER BY s.snapshot_time DESC, s.snapshot_id DESC
                     LIMIT 1),
                   (SELECT ac.initial_capital FROM accounts ac WHERE ac.account_id = a.account_id)
               )) AS value
          FROM days d CROSS JOIN accts a
         GROUP BY d.day
    ),
    series AS (
        SELECT day, value,
               lag(value) OVER (ORDER BY day) AS prev,
               max(value) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS peak
          FROM daily
    ),
    rets AS (
        SELECT value::double precision / prev::double precision - 1 AS r
          FROM series WHERE prev IS NOT NULL AND prev <> 0
    ),
    ret_stats AS (
        SELECT count(*) AS n, avg(r) AS mean, stddev_samp(r) AS sd FROM rets
    ),
    ends AS (
        SELECT (SELECT value FROM series ORDER BY day ASC LIMIT 1) AS start_value,
               (SELECT value FROM series ORDER BY day DESC LIMIT 1) AS end_value,
               (SELECT max(CASE WHEN peak > 0 THEN ts_div_round(peak - value, peak, 8) END)
                  FROM series) AS max_drawdown
    )
    SELECT
        CASE WHEN e.start_value > 0 THEN ts_div_round(e.end_value - e.start_value, e.start_value, 8) END,
        CASE WHEN r.n >= 2 AND r.sd > 0 THEN r.mean / r.sd * sqrt(252::double precision) END,
        e.max_drawdown,
        CASE WHEN r.n >= 2 THEN r.sd * sqrt(252::double precision) END,
        (SELECT count(*) FROM window_snaps),
        e.start_value,
        e.end_value
      FROM ends e CROSS JOIN ret_stats r
$$;

COMMENT ON FUNCTION get_portfolio_stats(TIMESTAMPTZ, TIMESTAMPTZ, TEXT) IS
    'Performance over snapshots with snapshot_time in [p_start, p_end], for one account or (p_account NULL) all accounts summed. Daily series: each account''s last snapshot per UTC calendar day, carried forward over days without one. total_return = round(end/start - 1, 8); daily simple returns r; volatility = stddev_samp(r)*sqrt(252) (NULL with fewer than 2 returns); sharpe = avg(r)/stddev_samp(r)*sqrt(252), risk-free 0 (NULL with fewer than 2 returns or zero deviation); max_drawdown = max over days of round((running peak - value)/running peak, 8), a positive fraction; snapshots = raw snapshot count; start_value/end_value = first and last daily values. Always one row (NULLs and snapshots = 0 when the window is empty).';
