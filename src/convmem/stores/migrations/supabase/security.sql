-- convmem on Supabase: row-level security and grants, for a new project. Paste
-- postgres/schema.sql into the project's SQL editor, then this file (or run both with
-- psql -f); `convmem migrate --store "postgresql://…?migrations=supabase"` applies both to
-- an empty database, and upgrades a project on an earlier schema.
--
-- Only the service role (the server's key) reaches conversations: the anon and
-- authenticated roles of Supabase's public API can neither read the tables nor call the
-- functions, whatever default privileges the project grants on new objects. Pasting this
-- file again changes nothing.

DO $$
BEGIN
    -- (nested: PL/pgSQL would plan the second test before the first has held)
    IF to_regclass('convmem_schema_migrations') IS NULL THEN
        RAISE EXCEPTION 'convmem''s schema is not in place yet'
            USING HINT = 'apply postgres/schema.sql first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM convmem_schema_migrations WHERE version = 12) THEN
        RAISE EXCEPTION 'this database holds an earlier convmem schema'
            USING HINT = 'upgrade it with `convmem migrate --store '
                         '"postgresql://…?migrations=supabase"`';
    END IF;
END
$$;

-- Locks down every convmem table and function: row-level security with one policy for
-- the service role, and nothing for PUBLIC, anon or authenticated. `convmem migrate` calls
-- it again whenever it re-creates the functions.
CREATE OR REPLACE FUNCTION convmem_lock_down() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_table regclass;
    v_function regprocedure;
BEGIN
    FOR v_table IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relname LIKE 'convmem\_%' AND n.nspname = current_schema()
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS convmem_service_role ON %s', v_table);
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, anon, authenticated', v_table);
        IF v_table = 'convmem_schema_migrations'::regclass THEN
            EXECUTE format('CREATE POLICY convmem_service_role ON %s FOR SELECT TO service_role'
                           ' USING (true)', v_table);
            EXECUTE format('GRANT SELECT ON %s TO service_role', v_table);
        ELSE
            EXECUTE format('CREATE POLICY convmem_service_role ON %s FOR ALL TO service_role'
                           ' USING (true) WITH CHECK (true)', v_table);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO service_role', v_table);
        END IF;
    END LOOP;
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proname LIKE 'convmem\_%' AND n.nspname = current_schema()
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC, anon, authenticated',
                       v_function);
        IF v_function <> 'convmem_lock_down()'::regprocedure THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', v_function);
        END IF;
    END LOOP;
END
$$;

SELECT convmem_lock_down();

-- This is every Supabase migration up to 0112.
INSERT INTO convmem_schema_migrations (version, name) VALUES
    (102, '0102_row_level_security'),
    (103, '0103_lock_down_reseal'),
    (104, '0104_lock_down_revisions'),
    (105, '0105_lock_down_summaries'),
    (106, '0106_lock_down_rewrite'),
    (107, '0107_lock_down_sealing_keys'),
    (108, '0108_lock_down_operator_reads'),
    (109, '0109_sealed_seqs'),
    (110, '0110_lock_down_update'),
    (111, '0111_lock_down_restore'),
    (112, '0112_lock_down_unannounced')
ON CONFLICT (version) DO NOTHING;
