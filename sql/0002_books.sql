-- Portfolio logic kept inside the database, so every writer (sink, REST API, backtester, a
-- person at psql) gets the same exact accounting. Each function and trigger is defined once,
-- here; the tables are in 0001_schema.sql.
--   * init_account     BEFORE INSERT ON accounts: cash and total value start at the initial
--                      capital;
--   * validate_order   BEFORE INSERT ON orders: refuses malformed orders with SQLSTATE TS001
--                      and orders for unknown accounts with TS002;
--   * apply_fill       AFTER INSERT ON fills: moves cash, then the position (avg price,
--                      realized and unrealized P&L, commission);
--   * update_portfolio_value AFTER INSERT / UPDATE / DELETE ON positions, once per statement
--                      (three triggers, one per event, with transition tables): revalues each
--                      account whose positions the statement changed, once;
--   * mark_to_market, mark_to_market_batch: mark positions (and keep each symbol's last mark);
--   * write_valuations: stores the trading core's valuations as portfolio snapshots, the only
--     writer of portfolio_snapshots (no trigger or mark writes one);
--   * check_available_funds, require_available_funds, calculate_position_pnl,
--     get_portfolio_stats, ts_div_round.
--
-- No function reads or sets a session or transaction setting: what a call does depends on its
-- arguments and the tables alone.
--
-- Custom SQLSTATEs (class TS, mapped to Rust errors by tradestream-postgres):
--   TS001 invalid order    COLUMN names the field, TABLE = 'orders'
--   TS002 unknown account  DETAIL is the account id
--   TS003 invalid argument to a function (COLUMN names the parameter)
--   TS004 insufficient funds  DETAIL is the account id

------------------------------------------------------------------------------------------------
-- Accounts

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

COMMENT ON FUNCTION init_account() IS
    'BEFORE INSERT ON accounts: cash defaults to initial_capital and total_value to cash when the insert leaves them NULL.';

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

COMMENT ON FUNCTION validate_order() IS
    'BEFORE INSERT ON orders: raises TS002 (DETAIL = account id, COLUMN account_id) for an unknown account; unless the order is REJECTED (a record of a refused request keeps the values that caused it), raises TS001 (TABLE orders, COLUMN = the field) for quantity <= 0 or NULL, a LIMIT/STOP_LIMIT order without limit_price, a STOP/STOP_LIMIT order without stop_price, or a price <= 0.';

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

-- A new position's first price is its symbol's last mark (symbol_marks) when that mark is at or
-- after the fill's time (the price marks in time order would have left: an instant's fills come
-- before its bar's close), else the fill price, so the books do not depend on whether a fill
-- or its instant's bar was stored first.
--
-- The account's total value moves by exactly what the fill changed (cash, and the position's
-- quantity × price before and after; NUMERIC is exact, so this equals revaluing every
-- position): summing all of the account's positions once per fill made the sink's fills the
-- slowest writes of the pipeline. The positions triggers below stand aside for changes made
-- here (they fire only for statements outside a trigger).
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
    -- Cash first: updating the account row also locks it, which serialises fills of one
    -- account.
    UPDATE accounts
       SET cash = cash - (q * p + NEW.commission),
           total_value = total_value - (q * p + NEW.commission),
           updated_at = now()
     WHERE account_id = NEW.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TS002', DETAIL = NEW.account_id,
            MESSAGE = format('unknown account %L for fill %L', NEW.account_id, NEW.fill_id);
    END IF;

    SELECT * INTO pos FROM positions
     WHERE account_id = NEW.account_id AND symbol = NEW.symbol
       FOR UPDATE;

    IF NOT FOUND THEN
        SELECT m.price INTO mark
          FROM symbol_marks m
         WHERE m.symbol = NEW.symbol AND m.at >= NEW.fill_time;
        INSERT INTO positions (account_id, symbol, quantity, avg_price, realized_pnl, commission,
                               current_price, unrealized_pnl, updated_at)
        VALUES (NEW.account_id, NEW.symbol, q, round(p, 8), 0, NEW.commission,
                COALESCE(mark, p), q * (COALESCE(mark, p) - round(p, 8)), NEW.fill_time);
        UPDATE accounts SET total_value = total_value + q * COALESCE(mark, p)
         WHERE account_id = NEW.account_id;
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
    UPDATE accounts
       SET total_value = total_value + new_q * mark
                         - pos.quantity * COALESCE(pos.current_price, pos.avg_price)
     WHERE account_id = NEW.account_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER apply_fill AFTER INSERT ON fills
    FOR EACH ROW EXECUTE FUNCTION apply_fill();

COMMENT ON FUNCTION apply_fill() IS
    'AFTER INSERT ON fills: cash -= q*p + commission (q signed: + BUY, - SELL), total_value moves by the same plus the positions change in quantity*COALESCE(current_price, avg_price), then the position: adding moves avg_price to round((|Q|*A + |q|*p)/(|Q|+|q|), 8); reducing realizes min(|q|,|Q|)*(p - A)*sign(Q), a flat position has avg 0 and a flip re-opens at p; a new position''s current_price is its symbol''s last mark (symbol_marks) when that is at or after the fill time, else the fill price, afterwards the last mark; unrealized_pnl = Q*(current_price - avg_price).';

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
    'Marks every position in p_symbol at p_price as of p_time (event time): current_price, unrealized_pnl = quantity*(p_price - avg_price), updated_at; the update_portfolio_value trigger then revalues their accounts. Writes no portfolio snapshot. Returns the number of positions updated; TS003 for a non-positive or NULL price or a NULL time.';

-- The sink marks positions at every stored bar. One mark_to_market per bar would update the
-- same positions and accounts rows hundreds of times in one transaction, and every update
-- leaves a row version that later lookups in the transaction walk past (O(bars²) per batch;
-- docs/benchmarks.md). The batch validates the marks, keeps each symbol's last mark, then
-- updates each marked position once, at its symbol's last mark; the update_portfolio_value
-- trigger revalues each affected account once for that statement.
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

    -- Every (mark, position of its symbol) pair, as one mark_to_market per mark would count.
    SELECT count(*) INTO n
      FROM unnest(p_symbols) AS u(symbol)
      JOIN positions p ON p.symbol = u.symbol;

    -- Each symbol's last valid mark of the batch, held or not (apply_fill reads it).
    INSERT INTO symbol_marks AS s (symbol, price, at)
    SELECT DISTINCT ON (u.symbol) u.symbol, u.price, u.at
      FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
     WHERE u.price > 0 AND u.at IS NOT NULL
     ORDER BY u.symbol, u.ord DESC
    ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, at = EXCLUDED.at;

    IF n = 0 THEN
        RETURN 0;
    END IF;

    -- Each marked position once, at its symbol's last mark of the batch. The statement's
    -- update_portfolio_value trigger revalues each of their accounts once.
    UPDATE positions p
       SET current_price  = l.price,
           unrealized_pnl = p.quantity * (l.price - p.avg_price),
           updated_at     = l.at
      FROM (SELECT DISTINCT ON (u.symbol) u.symbol, u.price, u.at
              FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
             ORDER BY u.symbol, u.ord DESC) l
     WHERE p.symbol = l.symbol;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION mark_to_market_batch(TEXT[], NUMERIC[], TIMESTAMPTZ[]) IS
    'Marks positions at each (symbol, price, time) of the arrays in order: each position and account is left at its last mark, exactly as one mark_to_market per element would leave them, in one update of the positions (each account is revalued once by the update_portfolio_value trigger); each symbol''s last mark is kept in symbol_marks. Writes no portfolio snapshot. Returns the number of (mark, position) pairs; TS003 for a non-positive price or a NULL time of a symbol with positions, or arrays of different lengths.';

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
-- Account value

-- Statement-level: a statement that changes many positions (a batch of marks, an operator's
-- edit) revalues each of their accounts once. A fill's own position change is not revalued
-- here: apply_fill, itself a trigger, moves the total value by exactly what it changed, and
-- these triggers fire only for statements outside a trigger (pg_trigger_depth() = 0). A single
-- trigger with transition tables may have only one event, so three triggers share this
-- function; each names the transition tables its event has (INSERT: new_positions; UPDATE:
-- both; DELETE: old_positions), and the function reads only those of TG_OP.
CREATE FUNCTION update_portfolio_value() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT n.account_id) INTO changed FROM new_positions n;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT c.account_id) INTO changed
          FROM (SELECT n.account_id FROM new_positions n
                UNION ALL
                SELECT o.account_id FROM old_positions o) c;
    ELSE
        SELECT array_agg(DISTINCT o.account_id) INTO changed FROM old_positions o;
    END IF;

    -- A position never marked is worth what it cost. An account that is itself being deleted
    -- has no row left to update.
    UPDATE accounts a
       SET total_value = a.cash + COALESCE(
               (SELECT sum(p.quantity * COALESCE(p.current_price, p.avg_price))
                  FROM positions p
                 WHERE p.account_id = a.account_id), 0),
           updated_at  = now()
     WHERE a.account_id = ANY (changed);
    RETURN NULL;
END;
$$;

CREATE TRIGGER update_portfolio_value_insert AFTER INSERT ON positions
    REFERENCING NEW TABLE AS new_positions
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION update_portfolio_value();
CREATE TRIGGER update_portfolio_value_update AFTER UPDATE ON positions
    REFERENCING OLD TABLE AS old_positions NEW TABLE AS new_positions
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION update_portfolio_value();
CREATE TRIGGER update_portfolio_value_delete AFTER DELETE ON positions
    REFERENCING OLD TABLE AS old_positions
    FOR EACH STATEMENT WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION update_portfolio_value();

COMMENT ON FUNCTION update_portfolio_value() IS
    'AFTER INSERT / UPDATE / DELETE ON positions, FOR EACH STATEMENT outside a trigger (triggers update_portfolio_value_insert, _update, _delete; apply_fill keeps the total value of its own changes): for each account whose positions the statement inserted, updated or deleted, once, accounts.total_value = cash + sum(quantity*COALESCE(current_price, avg_price)) over its positions, updated_at = now(). Writes no portfolio snapshot.';

------------------------------------------------------------------------------------------------
-- Portfolio snapshots

-- The trading core values every account at the end of each market instant (topic
-- `valuations`, in the same exact arithmetic as the triggers: tests/portfolio_model.rs keeps
-- them equal); the sink stores those values here. They are the only portfolio snapshots, so a
-- series depends on the input alone, not on the order the sink reads bars, fills and marks in.
CREATE FUNCTION write_valuations(
    p_accounts TEXT[], p_times TIMESTAMPTZ[], p_cash NUMERIC[], p_positions NUMERIC[],
    p_total NUMERIC[])
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n   BIGINT;
    bad RECORD;
BEGIN
    IF cardinality(p_accounts) IS DISTINCT FROM cardinality(p_times)
       OR cardinality(p_accounts) IS DISTINCT FROM cardinality(p_cash)
       OR cardinality(p_accounts) IS DISTINCT FROM cardinality(p_positions)
       OR cardinality(p_accounts) IS DISTINCT FROM cardinality(p_total) THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003',
            MESSAGE = format('write_valuations: %s accounts, %s times, %s cash amounts, %s positions values and %s total values',
                             COALESCE(cardinality(p_accounts)::text, 'NULL'),
                             COALESCE(cardinality(p_times)::text, 'NULL'),
                             COALESCE(cardinality(p_cash)::text, 'NULL'),
                             COALESCE(cardinality(p_positions)::text, 'NULL'),
                             COALESCE(cardinality(p_total)::text, 'NULL'));
    END IF;

    -- The first element with a NULL.
    SELECT u.ord,
           CASE WHEN u.account IS NULL THEN 'p_accounts'
                WHEN u.at IS NULL THEN 'p_times'
                WHEN u.cash IS NULL THEN 'p_cash'
                WHEN u.positions IS NULL THEN 'p_positions'
                ELSE 'p_total' END AS param
      INTO bad
      FROM unnest(p_accounts, p_times, p_cash, p_positions, p_total)
           WITH ORDINALITY AS u(account, at, cash, positions, total, ord)
     WHERE u.account IS NULL OR u.at IS NULL OR u.cash IS NULL OR u.positions IS NULL
        OR u.total IS NULL
     ORDER BY u.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003', COLUMN = bad.param,
            MESSAGE = format('write_valuations: %s[%s] must not be NULL', bad.param, bad.ord);
    END IF;

    -- The first element naming an account the database does not have.
    SELECT u.account, u.at INTO bad
      FROM unnest(p_accounts, p_times) WITH ORDINALITY AS u(account, at, ord)
     WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = u.account)
     ORDER BY u.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'TS002', DETAIL = bad.account,
            MESSAGE = format('unknown account %L for valuation at %s', bad.account, bad.at);
    END IF;

    -- One row per (account, time): the last element given for it wins, and it replaces a row
    -- already stored for that account and time (a later valuation of the instant). A row that
    -- already holds the same values is left alone and not counted, so a valuation read again
    -- (after a restart, at a new offset) writes nothing. An INSERT may not update one row
    -- twice, hence DISTINCT ON.
    WITH given AS (
        SELECT DISTINCT ON (u.account, u.at) u.account, u.at, u.cash, u.positions, u.total, u.ord
          FROM unnest(p_accounts, p_times, p_cash, p_positions, p_total)
               WITH ORDINALITY AS u(account, at, cash, positions, total, ord)
         ORDER BY u.account, u.at, u.ord DESC
    ),
    written AS (
        INSERT INTO portfolio_snapshots AS s (account_id, snapshot_time, total_value, cash,
                                              positions_value, total_pnl, total_return)
        SELECT g.account, g.at, g.total, g.cash, g.positions,
               g.total - a.initial_capital,
               ts_div_round(g.total - a.initial_capital, a.initial_capital, 8)
          FROM given g
          JOIN accounts a ON a.account_id = g.account
         ORDER BY g.ord
        ON CONFLICT ON CONSTRAINT portfolio_snapshots_account_time_key DO UPDATE
           SET total_value     = EXCLUDED.total_value,
               cash            = EXCLUDED.cash,
               positions_value = EXCLUDED.positions_value,
               total_pnl       = EXCLUDED.total_pnl,
               total_return    = EXCLUDED.total_return,
               created_at      = EXCLUDED.created_at
         WHERE (s.total_value, s.cash, s.positions_value, s.total_pnl, s.total_return)
               IS DISTINCT FROM (EXCLUDED.total_value, EXCLUDED.cash, EXCLUDED.positions_value,
                                 EXCLUDED.total_pnl, EXCLUDED.total_return)
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION write_valuations(TEXT[], TIMESTAMPTZ[], NUMERIC[], NUMERIC[], NUMERIC[]) IS
    'Stores the trading core''s valuations as portfolio snapshots: element i is account p_accounts[i] at p_times[i] with cash p_cash[i], positions value p_positions[i] and total value p_total[i]; total_pnl = total - initial_capital, total_return = ts_div_round(total_pnl, initial_capital, 8). One row per (account, time): the last element for it wins and replaces a stored row with different values (constraint portfolio_snapshots_account_time_key; a stored row with the same values is left as it is). Returns the number of rows inserted or updated. TS003 for arrays of different lengths or a NULL element (COLUMN = the parameter), TS002 (DETAIL = account id) for an unknown account; nothing is written then.';

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
