-- Lifecycle: datasets, model versions and runs can be deleted (DELETE /v1/datasets/{id},
-- /v1/models/{name}/versions/{v}, /v1/runs/{id}), refused while something still uses them.
-- The API checks the users first (and answers 409 naming them); the schema backs that check
-- where a foreign key can. An alias used to vanish with the version it pointed at (ON DELETE
-- CASCADE): a version delete racing an alias move could then drop the alias silently. Now the
-- delete fails instead (NO ACTION: checked at the end of the statement, so deleting a whole
-- model or team, whose aliases go in the same statement, still works).
ALTER TABLE model_aliases
    DROP CONSTRAINT model_aliases_version_id_fkey,
    ADD CONSTRAINT model_aliases_version_id_fkey
        FOREIGN KEY (version_id) REFERENCES model_versions (id) ON DELETE NO ACTION;
