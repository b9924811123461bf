-- Portfolio snapshots from the trading core: each settlement mark on `progress` carries every
-- account's value at its market instant (the books the trading core's risk checks use), and
-- the sink writes those as the instant's snapshots.
--
-- Why: the sink used to settle each instant itself (0060: `settle_steps` counted each step's
-- stored bars and mark, then `snapshot_instant` valued every account from today's books minus
-- the fills stored after the instant). That was a third step tracker beside the trading
-- core's barrier, and its cost grew with how far fills ran ahead of bars: the demo's 6,593
-- instants took 30 - 40 s to settle. The trading core already knows each instant's books, in
-- the same exact arithmetic as the triggers (a property test, tests/portfolio_model.rs, keeps
-- them equal), so the snapshot is written from what it says: one row per account and
-- instant, whatever the order the sink reads bars, fills and marks in.

DROP FUNCTION settle_steps(TEXT, BIGINT[], TIMESTAMPTZ[], INTEGER[], INTEGER[], BOOLEAN[]);
DROP FUNCTION snapshot_instant(TIMESTAMPTZ);
DROP TABLE lockstep_steps;
DROP TABLE portfolio_settlement;

-- Writes the snapshots of settlement marks: element i is account p_accounts[i] at
-- p_times[i]. Once per account and instant (a mark read again after a restart writes
-- nothing); an account the database does not have is skipped. Returns how many were written.
CREATE FUNCTION write_settled_snapshots(
    p_accounts TEXT[], p_times TIMESTAMPTZ[], p_cash NUMERIC[], p_positions NUMERIC[],
    p_total NUMERIC[])
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    WITH given AS (
        SELECT DISTINCT ON (u.account, u.at) u.account, u.at, u.cash, u.positions, u.total, u.ord
          FROM unnest(p_accounts, p_times, p_cash, p_positions, p_total)
               WITH ORDINALITY AS u(account, at, cash, positions, total, ord)
         ORDER BY u.account, u.at, u.ord
    ),
    written AS (
        INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash,
                                         positions_value, total_pnl, total_return)
        SELECT g.account, g.at, g.total, g.cash, g.positions,
               g.total - a.initial_capital,
               ts_div_round(g.total - a.initial_capital, a.initial_capital, 8)
          FROM given g
          JOIN accounts a ON a.account_id = g.account
         WHERE NOT EXISTS (SELECT 1 FROM portfolio_snapshots s
                            WHERE s.account_id = g.account AND s.snapshot_time = g.at)
         ORDER BY g.ord
        RETURNING 1
    )
    SELECT count(*) INTO n FROM written;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION write_settled_snapshots(TEXT[], TIMESTAMPTZ[], NUMERIC[], NUMERIC[], NUMERIC[]) IS
    'Writes the portfolio snapshots the trading core''s settlement marks carry (account, instant, cash, positions value, total value; total_pnl and total_return from the account''s initial capital), once per account and instant; skips unknown accounts; returns how many were written.';
