-- Dagster's PostgreSQL role and database (run once, as the server's admin user; deploy/README.md, step 2):
--   psql "host=$PGHOST user=$PGADMIN dbname=postgres sslmode=verify-full sslrootcert=pg-ca.crt" \
--     -v dagster_password="$(cat pg-password)" -f deploy/postgres/setup.sql
-- The password comes in as a psql variable (never written in this file); the role owns its database, so
-- `dagster instance migrate` can create its tables in the public schema (PostgreSQL 15+ no longer lets every
-- role create there), and no other role may connect. Checked by tests/k8s/test_deploy_matches_code.py
-- against a real PostgreSQL.
\set ON_ERROR_STOP on
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster ENCODING 'UTF8';
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE dagster TO dagster;
