-- careledger_analyst: read-only access to the read models, nothing else (PostgreSQL).
--
-- Run it as the role that owns the read models (the one `careledger projections` connects
-- as), once per schema, after the projector has created its tables; running it again is safe:
--
--   psql "postgresql://owner@host/db" -v schema=careledger -f docs/sql/analyst_role.sql
--
-- (schema=public when CARELEDGER_DATABASE_SCHEMA is unset). Analysts then log in as their own
-- roles and inherit this one:  CREATE ROLE alice LOGIN IN ROLE careledger_analyst;
-- `careledger projections rebuild` re-applies these grants to the tables it re-creates.

DO $$
BEGIN
    CREATE ROLE careledger_analyst NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- already there: only the grants below are (re)applied
END
$$;

GRANT USAGE ON SCHEMA :"schema" TO careledger_analyst;
SET search_path TO :"schema";

-- The analysts' contract (docs/analysts.md), the helper tables, and the retention views.
-- (Per table, so every column is included: ledger_entries' zero-point `noted` rows with their
-- reason, adjustments' reason and operator, program_kpis_daily's points_adjusted.)
GRANT SELECT ON
    balances,
    ledger_entries,
    tier_history,
    dead_letters,
    retention_cohorts,
    program_kpis_daily,
    patient_activity_months,
    patient_activity_days,
    partner_liability,
    partner_settlement,
    engagement_monthly,
    activity_days,
    patient_goal_readings,
    partner_redemptions,
    vouchers,
    benefits,
    memberships,
    membership_kpis_monthly,
    wallets,
    program_retention_12m,
    program_retention_12m_monthly
TO careledger_analyst;

-- Never the event store or any position, even if something granted them by mistake.
REVOKE ALL ON careledger_events, notification_tracking, projection_positions
FROM careledger_analyst;

-- No writes: nothing above grants INSERT, UPDATE, DELETE, TRUNCATE or CREATE. Sessions that
-- log in as the role itself are read-only as well.
ALTER ROLE careledger_analyst SET default_transaction_read_only = on;
