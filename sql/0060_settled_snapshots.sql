-- Settled portfolio snapshots: under lockstep the sink values each account once per market
-- instant, after everything that instant caused is stored, instead of as bars and fills
-- happen to arrive.
--
-- Why: the sink receives bars and fills in whatever order its consumer fetches them, so
-- snapshots written on arrival valued a fill that came in after a later instant's bars at that
-- later instant's prices, and a new position at its fill price until the next bar. Two runs
-- over the same input wrote different series (and different Sharpe ratios and drawdowns),
-- though their final books agreed. A settled snapshot is a function of the input alone:
--
--   at instant T (the event time of lockstep step s), for each account
--     cash(T)      = initial capital − Σ (signed quantity × price + commission), fills ≤ T
--     quantity(T)  = Σ signed quantity per symbol, fills ≤ T
--     price(T)     = close of the symbol's last bar ≤ T (the last fill price ≤ T without one)
--     value(T)     = cash(T) + Σ quantity(T) × price(T)
--   written for every account that holds a position at T or traded at T.
--
-- Step s is settled once (a) every bar of it is stored (the bars' `step_bars` says how many),
-- (b) the exchange's lockstep mark of step s has been applied, which inserts the step's fills
-- (the mark carries them; they are the records also on `fills`, stored once by fill_id), and
-- (c) step s − 1 is settled. Then every fill ≤ T and every bar ≤ T is stored, whatever
-- arrived first. The books (cash, positions) are still moved on arrival by the fill trigger,
-- so cash(T) and quantity(T) are today's values minus the fills after T.
--
-- The sink stands the arrival snapshots aside with the transaction-local setting
-- tradestream.snapshots = 'off' (the fill trigger and marks of sequenced bars); unset, both
-- still write them, for every other writer (psql, tests, tools). Unsequenced market data
-- (step 0) is marked with snapshots on, as before.

-- The last price mark_to_market_batch marked each symbol at, in the order it marked them
-- (whether or not anybody held the symbol then).
CREATE TABLE symbol_marks (
    symbol TEXT NOT NULL,
    price  NUMERIC(28,8) NOT NULL,
    at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT symbol_marks_pkey PRIMARY KEY (symbol)
);

-- A new position's first price is its symbol's last mark when that mark is at or after the
-- fill's time (the price marks in time order would have left: an instant's fills come before
-- its bar's close), else the fill price. Before, it was always the fill price, so a fill
-- stored after its instant's bar had been marked left the position at its fill price until
-- the next bar, and a run's final value depended on which came first. Marks applied, not
-- bars stored: a writer stores a batch's bars before applying its fills and marks in order.
CREATE OR REPLACE FUNCTION apply_fill() RETURNS trigger
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
        SELECT m.price INTO mark
          FROM symbol_marks m
         WHERE m.symbol = NEW.symbol AND m.at >= NEW.fill_time;
        INSERT INTO positions (account_id, symbol, quantity, avg_price, realized_pnl, commission,
                               current_price, unrealized_pnl, updated_at)
        VALUES (NEW.account_id, NEW.symbol, q, round(p, 8), 0, NEW.commission,
                COALESCE(mark, p), q * (COALESCE(mark, p) - round(p, 8)), NEW.fill_time);
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

COMMENT ON FUNCTION apply_fill() IS
    'AFTER INSERT ON fills: cash -= q*p + commission (q signed: + BUY, - SELL), then the position: adding moves avg_price to round((|Q|*A + |q|*p)/(|Q|+|q|), 8); reducing realizes min(|q|,|Q|)*(p - A)*sign(Q), a flat position has avg 0 and a flip re-opens at p; a new position''s current_price is its symbol''s last mark (symbol_marks) when that is at or after the fill time, else the fill price, afterwards the last mark; unrealized_pnl = Q*(current_price - avg_price).';

-- The snapshot of update_portfolio_value is skipped under tradestream.snapshots = 'off'; the
-- account's total value is kept either way.
CREATE OR REPLACE FUNCTION update_portfolio_value() RETURNS trigger
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

    IF current_setting('tradestream.snapshots', true) IS NOT DISTINCT FROM 'off' THEN
        RETURN NULL;
    END IF;
    pnl := acct.total_value - acct.initial_capital;
    INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                     positions_value, total_pnl, total_return)
    VALUES (acct_id, at, acct.total_value, acct.cash, pos_value, pnl,
            ts_div_round(pnl, acct.initial_capital, 8));
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION update_portfolio_value() IS
    'AFTER INSERT/UPDATE/DELETE ON positions: accounts.total_value = cash + sum(quantity*current_price) over the account''s positions, and (unless the transaction set tradestream.snapshots = ''off'') a portfolio_snapshots row (total_value, cash, positions_value, total_pnl = total_value - initial_capital, total_return = round(total_pnl/initial_capital, 8)) at the position''s updated_at.';

-- mark_to_market_batch as in 0050, its snapshots skipped under tradestream.snapshots = 'off',
-- and each symbol's last mark kept in symbol_marks.
CREATE OR REPLACE FUNCTION mark_to_market_batch(p_symbols TEXT[], p_prices NUMERIC[], p_times TIMESTAMPTZ[])
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n   BIGINT;
    bad RECORD;
    snapshots BOOLEAN := current_setting('tradestream.snapshots', true) IS DISTINCT FROM 'off';
BEGIN
    IF cardinality(p_symbols) IS DISTINCT FROM cardinality(p_prices)
       OR cardinality(p_symbols) IS DISTINCT FROM cardinality(p_times) THEN
        RAISE EXCEPTION USING ERRCODE = 'TS003',
            MESSAGE = format('mark_to_market_batch: %s symbols, %s prices and %s times',
                             cardinality(p_symbols), cardinality(p_prices), cardinality(p_times));
    END IF;

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

    -- See 0050 for how the running values are computed.
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
         WHERE snapshots AND r.next_at IS DISTINCT FROM r.at
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

    INSERT INTO symbol_marks AS s (symbol, price, at)
    SELECT DISTINCT ON (u.symbol) u.symbol, u.price, u.at
      FROM unnest(p_symbols, p_prices, p_times) WITH ORDINALITY AS u(symbol, price, at, ord)
     WHERE u.price > 0 AND u.at IS NOT NULL
     ORDER BY u.symbol, u.ord DESC
    ON CONFLICT (symbol) DO UPDATE SET price = EXCLUDED.price, at = EXCLUDED.at;

    IF n = 0 THEN
        RETURN 0;
    END IF;

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
    'Marks positions at each (symbol, price, time) of the arrays in order: each position and account is left at its last mark, exactly as one mark_to_market per element would leave them, each symbol''s last mark is kept in symbol_marks, and (unless the transaction set tradestream.snapshots = ''off'') each account gets one portfolio snapshot per run of its consecutive marks with the same time (the value after the last of the run). Returns the number of (mark, position) pairs; TS003 for a non-positive price or a NULL time of a symbol with positions, or arrays of different lengths.';

-- Settlement bookkeeping, per sink consumer group (a group's offsets are its own, and a second
-- group over the same database starts its own count).
CREATE TABLE lockstep_steps (
    consumer_group TEXT NOT NULL,
    step           BIGINT NOT NULL,
    -- Event time of the step's bars.
    event_time     TIMESTAMPTZ NOT NULL,
    -- The bars' step_bars; NULL while none of them is stored.
    bars_expected  INTEGER,
    bars_stored    INTEGER NOT NULL DEFAULT 0,
    -- Whether the exchange's mark of the step (and so its fills) has been applied.
    fills_in       BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT lockstep_steps_pkey PRIMARY KEY (consumer_group, step),
    CONSTRAINT lockstep_steps_step_positive CHECK (step > 0),
    CONSTRAINT lockstep_steps_bars_expected_positive CHECK (bars_expected > 0)
);

COMMENT ON TABLE lockstep_steps IS
    'Steps a sink group has seen but not settled (settled ones are deleted): how many of their bars are stored, and whether the exchange''s mark with their fills is.';

CREATE TABLE portfolio_settlement (
    consumer_group TEXT NOT NULL,
    -- Every step up to this one has its snapshots.
    settled_step   BIGINT NOT NULL,
    settled_time   TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT portfolio_settlement_pkey PRIMARY KEY (consumer_group)
);

COMMENT ON TABLE portfolio_settlement IS
    'How far each sink group has settled portfolio snapshots. Created at the group''s first exchange mark, one step before it (marks arrive in step order on one partition; a topic whose first marks were lost to retention starts there).';

-- Fills after an instant, taken back out of today's books.
CREATE INDEX fills_fill_time_idx ON fills (fill_time);

-- Writes the settled snapshots of instant p_at (see the header); returns how many.
CREATE FUNCTION snapshot_instant(p_at TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    WITH later AS (
        SELECT f.account_id, f.symbol,
               sum(CASE f.side WHEN 'BUY' THEN f.quantity ELSE -f.quantity END) AS quantity,
               sum(CASE f.side WHEN 'BUY' THEN f.quantity ELSE -f.quantity END * f.price
                   + f.commission) AS spent
          FROM fills f
         WHERE f.fill_time > p_at
         GROUP BY f.account_id, f.symbol
    ),
    held AS (
        SELECT p.account_id, p.symbol, p.quantity - COALESCE(l.quantity, 0) AS quantity
          FROM positions p
          LEFT JOIN later l ON l.account_id = p.account_id AND l.symbol = p.symbol
    ),
    valued AS (
        SELECT h.account_id,
               sum(h.quantity * COALESCE(
                   (SELECT m.close FROM market_data m
                     WHERE m.symbol = h.symbol AND m.event_time <= p_at
                     ORDER BY m.event_time DESC LIMIT 1),
                   (SELECT f.price FROM fills f
                     WHERE f.account_id = h.account_id AND f.symbol = h.symbol
                       AND f.fill_time <= p_at
                     ORDER BY f.fill_time DESC, f.fill_id DESC LIMIT 1))) AS positions_value
          FROM held h
         WHERE h.quantity <> 0
         GROUP BY h.account_id
    ),
    chosen AS (
        SELECT v.account_id FROM valued v
        UNION
        SELECT f.account_id FROM fills f WHERE f.fill_time = p_at
    ),
    state AS (
        SELECT a.account_id, a.initial_capital,
               a.cash + COALESCE((SELECT sum(l.spent) FROM later l
                                   WHERE l.account_id = a.account_id), 0) AS cash,
               COALESCE(v.positions_value, 0) AS positions_value
          FROM chosen c
          JOIN accounts a ON a.account_id = c.account_id
          LEFT JOIN valued v ON v.account_id = c.account_id
    ),
    written AS (
        INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                         positions_value, total_pnl, total_return)
        SELECT s.account_id, p_at, s.cash + s.positions_value, s.cash, s.positions_value,
               s.cash + s.positions_value - s.initial_capital,
               ts_div_round(s.cash + s.positions_value - s.initial_capital, s.initial_capital, 8)
          FROM state s
         ORDER BY s.account_id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION snapshot_instant(TIMESTAMPTZ) IS
    'Writes one portfolio snapshot at p_at for every account holding a position at p_at or with a fill at p_at, valued from the stored fills up to p_at and each held symbol''s last close up to p_at (its last fill price up to p_at without one); returns the number written. Correct once every fill and bar up to p_at is stored.';

-- Records what a sink batch stored of lockstep steps (new bars per step, exchange marks
-- applied), then settles every step that became complete, in order. Returns the number of
-- snapshots written.
CREATE FUNCTION settle_steps(
    p_group TEXT, p_steps BIGINT[], p_times TIMESTAMPTZ[], p_expected INTEGER[],
    p_bars INTEGER[], p_marked BOOLEAN[])
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    done       BIGINT;
    st         lockstep_steps%ROWTYPE;
    n          BIGINT := 0;
    first_mark BIGINT;
    last_time  TIMESTAMPTZ;
BEGIN
    SELECT s.settled_step INTO done FROM portfolio_settlement s
     WHERE s.consumer_group = p_group FOR UPDATE;
    IF NOT FOUND THEN
        SELECT min(u.step) INTO first_mark
          FROM unnest(p_steps, p_marked) AS u(step, marked)
         WHERE u.marked;
        IF first_mark IS NOT NULL THEN
            done := first_mark - 1;
            INSERT INTO portfolio_settlement (consumer_group, settled_step)
            VALUES (p_group, done);
        END IF;
    END IF;

    INSERT INTO lockstep_steps AS l (consumer_group, step, event_time, bars_expected,
                                     bars_stored, fills_in)
    SELECT p_group, u.step, u.at, u.expected, u.bars, u.marked
      FROM unnest(p_steps, p_times, p_expected, p_bars, p_marked) AS u(step, at, expected, bars, marked)
     WHERE done IS NULL OR u.step > done
    ON CONFLICT (consumer_group, step) DO UPDATE
       SET bars_expected = COALESCE(l.bars_expected, EXCLUDED.bars_expected),
           bars_stored   = l.bars_stored + EXCLUDED.bars_stored,
           fills_in      = l.fills_in OR EXCLUDED.fills_in;

    IF done IS NULL THEN
        RETURN 0;
    END IF;
    LOOP
        SELECT * INTO st FROM lockstep_steps l
         WHERE l.consumer_group = p_group AND l.step = done + 1
           AND l.fills_in AND l.bars_stored >= l.bars_expected;
        EXIT WHEN NOT FOUND;
        n := n + snapshot_instant(st.event_time);
        done := done + 1;
        last_time := st.event_time;
    END LOOP;
    IF last_time IS NOT NULL THEN
        UPDATE portfolio_settlement
           SET settled_step = done, settled_time = last_time, updated_at = now()
         WHERE consumer_group = p_group;
        DELETE FROM lockstep_steps l WHERE l.consumer_group = p_group AND l.step <= done;
    END IF;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION settle_steps(TEXT, BIGINT[], TIMESTAMPTZ[], INTEGER[], INTEGER[], BOOLEAN[]) IS
    'For sink group p_group: adds, per element, p_bars newly stored bars (of p_expected per step) and whether the exchange''s mark was applied to step p_steps at p_times, then writes the snapshots (snapshot_instant) of every step that is complete, in step order, and returns how many.';
