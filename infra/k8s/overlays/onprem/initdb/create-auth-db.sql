-- Runs once, when the PostgreSQL data directory is first initialised.
-- MLflow's tracking data lives in the database POSTGRES_DB (mlflow); the basic-auth
-- app's users and permissions in this one (database_uri in basic_auth.ini).
CREATE DATABASE mlflow_auth;
