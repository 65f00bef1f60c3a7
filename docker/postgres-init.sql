-- Runs once, when the postgres service creates its data volume (POSTGRES_DB makes the mlflow
-- database): Prefect's database, owned by the same user.
CREATE DATABASE prefect;
